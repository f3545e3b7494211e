"""Kubernetes manifests: golden files, official schemas, pod settings, secrets, scale, CLI."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from conftest_k8s import (
    CHART, GOLDEN, K8S_VERSIONS, KUBERNETES_EXAMPLES, LOCAL_EXAMPLES, REPO, UPDATE_GOLDEN, all_pod_templates,
    env_of, load_example, render_objects, restricted_violations, rayjob_validator, small_spec_data, spec_of,
    validate_object,
)
from launcher.cli import main
from launcher.errors import SpecError
from launcher.plan import plan_job
from launcher.spec import load_spec_text
from launcher.targets.kubernetes.documents import render_documents
from launcher.targets.kubernetes.pods import GPU_RESOURCE, JOB_LABEL, QUEUE_LABEL, SPEC_HASH_ANNOTATION
from launcher.targets.kubernetes.render import (
    DEFAULT_RAY_TTL_S, NODE_COMMAND, RAY_VERSION, RDZV_PORT, RDZV_TIMEOUTS, plan_for_render, rank_selector, render,
    rendezvous_host,
)
from training.exitcodes import CONFIG_ERROR, POST_TRAINING_FAILED, PREEMPTED

EXAMPLE_IDS = [p.stem for p in KUBERNETES_EXAMPLES]
SECRET_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "WANDB_API_KEY"}


@pytest.fixture(params=KUBERNETES_EXAMPLES, ids=EXAMPLE_IDS)
def example(request: pytest.FixtureRequest) -> Path:
    return request.param


def job_pods(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pod templates of containers that run the job's code (every pod but the Ray submitter)."""
    return {role: t for role, t in all_pod_templates(objects).items() if role != "submitter"}


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [obj for obj in objects if obj["kind"] == kind]
    return found


def workload(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(obj for obj in objects if obj["kind"] in ("Job", "RayJob"))


# --- golden files and determinism -------------------------------------------------------------

def test_golden_manifests(example: Path) -> None:
    text = render_documents(example)
    golden = GOLDEN / f"{example.stem}.yaml"
    if UPDATE_GOLDEN:
        golden.write_text(text)
    assert golden.exists(), f"no golden file; run with DLAUNCH_UPDATE_GOLDEN=1 to create {golden}"
    assert text == golden.read_text(), f"{example.name} renders differently from {golden} (intended? "\
                                       "rerun with DLAUNCH_UPDATE_GOLDEN=1 and review the diff)"


def test_every_example_has_a_golden_file() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.yaml")) == sorted(EXAMPLE_IDS)


def test_render_is_byte_identical_across_processes(example: Path) -> None:
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-m", "launcher.cli", "render", str(example)], cwd=REPO, env=env,
                             capture_output=True, text=True, check=True)
        outputs.add(out.stdout)
    assert outputs == {render_documents(example)}


# --- official schemas -------------------------------------------------------------------------

@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_objects_validate_against_kubernetes_openapi(example: Path, version: str) -> None:
    core = [obj for obj in render_objects(load_example(example)) if obj["apiVersion"] != "ray.io/v1"]
    assert core, "every example renders at least a ConfigMap"
    for obj in core:
        kubernetes_validate.validate(obj, version, strict=True)


def test_rayjobs_validate_against_kuberay_crd(example: Path) -> None:
    rayjobs = [obj for obj in render_objects(load_example(example)) if obj["kind"] == "RayJob"]
    for obj in rayjobs:
        rayjob_validator().validate(obj)
    assert bool(rayjobs) == (load_example(example).backend == "ray")


def test_validators_reject_a_misspelt_field() -> None:
    """The schema checks above are strict: a typo anywhere would fail them."""
    job = workload(render_objects(spec_of(small_spec_data())))
    job["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSIONS[0], strict=True)
    rayjob = workload(render_objects(spec_of(small_spec_data("ray"))))
    rayjob["spec"]["shutdownAfterJobFinish"] = True
    with pytest.raises(jsonschema.ValidationError):
        rayjob_validator().validate(rayjob)


# --- every pod --------------------------------------------------------------------------------

def test_every_pod_follows_the_restricted_profile(example: Path) -> None:
    for role, template in all_pod_templates(render_objects(load_example(example))).items():
        assert restricted_violations(template["spec"]) == [], role


def test_every_pod_requests_what_the_spec_asks(example: Path) -> None:
    spec = load_example(example)
    res = spec.resources
    for role, template in all_pod_templates(render_objects(spec)).items():
        resources = template["spec"]["containers"][0]["resources"]
        assert resources["requests"] == resources["limits"], role
        assert set(resources["limits"]) >= {"cpu", "memory"}, role
        if role in ("node", "workers"):
            assert resources["limits"]["memory"] == res.memory
            assert resources["limits"].get(GPU_RESOURCE) == (str(res.gpus_per_node) if res.gpus_per_node else None)
        else:
            assert GPU_RESOURCE not in resources["limits"], role


def test_shm_is_memory_backed_and_sized_from_the_spec(example: Path) -> None:
    spec = load_example(example)
    for role, template in job_pods(render_objects(spec)).items():
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in template["spec"]["containers"][0]["volumeMounts"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
        if role != "head":
            assert volumes[mounts["/dev/shm"]]["emptyDir"]["sizeLimit"] == spec.resources.shm
        assert volumes[mounts["/etc/dlaunch"]]["configMap"]["name"] == f"{spec.name}-config"


def test_every_pod_carries_the_spec_scheduling_and_labels(example: Path) -> None:
    spec = load_example(example)
    k8s = spec.kubernetes
    for role, template in all_pod_templates(render_objects(spec)).items():
        pod = template["spec"]
        assert template["metadata"]["labels"][JOB_LABEL] == spec.name
        assert k8s.labels.items() <= template["metadata"]["labels"].items()
        assert pod.get("nodeSelector", {}) == k8s.node_selector, role
        assert pod.get("tolerations", []) == [t.model_dump(by_alias=True, exclude_none=True) for t in k8s.tolerations]
        assert pod.get("priorityClassName") == k8s.priority_class
        assert pod.get("serviceAccountName") == k8s.service_account
        assert [s["name"] for s in pod.get("imagePullSecrets", [])] == k8s.image_pull_secrets
        assert pod["terminationGracePeriodSeconds"] == k8s.termination_grace
        assert pod["automountServiceAccountToken"] is False


def test_credentials_come_only_from_the_named_secrets_as_files(example: Path) -> None:
    """No credential is an environment variable: each named Secret is a read-only volume, and the
    variables only name its files (checkov CKV_K8S_35)."""
    spec = load_example(example)
    secrets = spec.kubernetes.secrets
    for role, template in all_pod_templates(render_objects(spec)).items():
        pod = template["spec"]
        for container in pod["containers"]:
            assert not [e for e in container.get("env", []) if "valueFrom" in e], (role, container["name"])
            assert not SECRET_ENV & set(env_of(container)), (role, container["name"])
        mounted = {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        expected = {secrets.s3, secrets.wandb} - {None} if role != "submitter" else set()
        assert mounted == expected, role
    for role, template in job_pods(render_objects(spec)).items():
        container = template["spec"]["containers"][0]
        env = env_of(container)
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        if secrets.s3 is not None:
            assert env["AWS_SHARED_CREDENTIALS_FILE"]["value"] == "/etc/dlaunch/secrets/s3/credentials"
            assert mounts["/etc/dlaunch/secrets/s3"]["readOnly"] is True
        if secrets.wandb is not None:
            assert env["NETRC"]["value"] == "/etc/dlaunch/secrets/wandb/netrc"
            assert mounts["/etc/dlaunch/secrets/wandb"]["readOnly"] is True
        assert ("NETRC" in env) == (secrets.wandb is not None), role
        assert ("AWS_SHARED_CREDENTIALS_FILE" in env) == (secrets.s3 is not None), role
        assert {k: env[k]["value"] for k in spec.kubernetes.env} == spec.kubernetes.env


def test_secret_files_are_readable_by_the_pods_group_only() -> None:
    data = small_spec_data()
    data["kubernetes"]["secrets"] = {"s3": "s3-creds", "wandb": "wandb"}
    pod = workload(render_objects(spec_of(data)))["spec"]["template"]["spec"]
    modes = {v["secret"]["secretName"]: v["secret"]["defaultMode"] for v in pod["volumes"] if "secret" in v}
    assert modes == {"s3-creds": 0o440, "wandb": 0o440}
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]


# --- no secret can reach the output -----------------------------------------------------------

SECRET_VALUES = {
    "aws-access-key-id": "AKIAIOSFODNN7EXAMPLE",
    "private-key": "-----BEGIN RSA PRIVATE KEY-----MIIEow",
    "github-token": "ghp_" + "a1B2" * 9,
    "hugging-face-token": "hf_" + "x" * 34,
    "slack-token": "xoxb-1234567890-abcdef",
    "json-web-token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl",
    "password-in-url": "postgresql://trainer:hunter2@db.internal:5432/runs",
}


@pytest.mark.parametrize("value", SECRET_VALUES.values(), ids=SECRET_VALUES.keys())
@pytest.mark.parametrize("fmt", ["yaml", "helm-values"])
def test_secret_looking_env_value_is_refused(value: str, fmt: str) -> None:
    data = small_spec_data()
    data["kubernetes"]["env"] = {"DATABASE": value}
    with pytest.raises(SpecError) as caught:
        render_documents(spec_of(data), fmt)
    message = str(caught.value)
    assert "kubernetes.env.DATABASE" in message and "kubernetes.secrets" in message
    assert value not in message


@pytest.mark.parametrize("name", ["WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN", "DB_PASSWORD"])
def test_secret_looking_env_name_is_refused_by_render(name: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    data = small_spec_data()
    data["kubernetes"]["env"] = {name: "some-value"}
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    assert main(["render", str(spec_file)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "kubernetes.env" in captured.err and "kubernetes.secrets" in captured.err
    assert "some-value" not in captured.err


@pytest.mark.parametrize("fmt", ["yaml", "json", "helm-values"])
def test_local_environment_never_reaches_the_output(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sentinels = {"AWS_SECRET_ACCESS_KEY": "local-aws-sentinel-4711", "WANDB_API_KEY": "local-wandb-sentinel-4711",
                 "AWS_ACCESS_KEY_ID": "AKIALOCALSENTINEL471"}
    for key, value in sentinels.items():
        monkeypatch.setenv(key, value)
    for example in KUBERNETES_EXAMPLES:
        text = render_documents(example, fmt)
        assert not any(value in text for value in sentinels.values()), example.name


# --- what render refuses ----------------------------------------------------------------------

def _without(path: str) -> Any:
    def change(data: dict[str, Any]) -> None:
        *parents, key = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        node.pop(key)
    return change


def _set(path: str, value: Any) -> Any:
    def change(data: dict[str, Any]) -> None:
        *parents, key = path.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[key] = value
    return change


BAD_RENDERS = {
    "no-image": (_without("image"), "image"),
    "no-cpu": (_without("resources.cpu"), "resources.cpu"),
    "no-memory": (_without("resources.memory"), "resources.memory"),
    "shm-not-below-memory": (_set("resources.shm", "256Gi"), "resources.shm"),
    "reserved-env-home": (_set("kubernetes.env", {"HOME": "/root"}), "kubernetes.env.HOME"),
    "reserved-env-rendezvous": (_set("kubernetes.env", {"DLAUNCH_RDZV_HOST": "x"}), "kubernetes.env.DLAUNCH_RDZV_HOST"),
    "reserved-label-job": (_set("kubernetes.labels", {"dlaunch.dev/job": "other"}),
                           "kubernetes.labels.dlaunch.dev/job"),
    "queue-as-label": (_set("kubernetes.labels", {"kueue.x-k8s.io/queue-name": "a"}),
                       "kubernetes.labels.kueue.x-k8s.io/queue-name"),
}


@pytest.mark.parametrize("change,path", BAD_RENDERS.values(), ids=BAD_RENDERS.keys())
def test_render_refuses(change: Any, path: str) -> None:
    data = small_spec_data()
    data["target"] = "local"  # a Kubernetes spec without an image is already invalid as a spec
    change(data)
    with pytest.raises(SpecError) as caught:
        render(spec_of(data), plan_for_render(spec_of(data)))
    assert path in [problem.path for problem in caught.value.problems]


@pytest.mark.parametrize("example", LOCAL_EXAMPLES, ids=[p.stem for p in LOCAL_EXAMPLES])
def test_local_examples_are_refused_with_what_to_add(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(example)]) == 2
    err = capsys.readouterr().err
    assert str(example) in err and "image" in err and "resources.cpu" in err


# --- DeepSpeed: Service + Indexed Job ---------------------------------------------------------

def test_indexed_job_runs_one_agent_per_node_with_rendezvous_at_pod_0() -> None:
    spec = spec_of(small_spec_data())
    service, job = (of_kind(render_objects(spec), kind) for kind in ("Service", "Job"))
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    host = "unit-k8s-0.unit-k8s.unit.svc"
    assert rendezvous_host(spec) == host
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2
    assert pod["subdomain"] == service["metadata"]["name"] == "unit-k8s"
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert {"--nnodes=2", "--nproc-per-node=8", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={host}:{RDZV_PORT}"} <= set(container["args"])
    # c10d ignores --node-rank (it ranks nodes by host name); nothing may claim pod index = rank
    assert not any(arg.startswith("--node-rank") for arg in container["args"])
    conf = next(a for a in container["args"] if a.startswith("--rdzv-conf=")).removeprefix("--rdzv-conf=")
    assert dict(item.split("=") for item in conf.split(",")) == {k: str(v) for k, v in RDZV_TIMEOUTS.items()}
    # the agent itself is PID 1 (no shell that would swallow SIGTERM); it does the rendezvous wait
    assert container["command"] == NODE_COMMAND == ["python", "-m", "training.agent"]
    assert env_of(container)["DLAUNCH_RDZV_HOST"]["value"] == host


def test_pod_failure_policy_fails_fast_on_config_errors_and_ignores_preemption() -> None:
    spec = spec_of(small_spec_data())
    job = workload(render_objects(spec))["spec"]
    rules = job["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {"containerName": "worker", "operator": "In",
                                                             "values": [CONFIG_ERROR]}}
    assert {"action": "FailJob", "onExitCodes": {"containerName": "worker", "operator": "In",
                                                 "values": [POST_TRAINING_FAILED]}} in rules
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in rules
    assert {"action": "Ignore", "onExitCodes": {"containerName": "worker", "operator": "In",
                                                "values": [PREEMPTED]}} in rules
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    # torchrun owns the gang restarts; the Job never multiplies them by re-running failed pods
    assert "backoffLimit" not in job
    assert (job["backoffLimitPerIndex"], job["maxFailedIndexes"]) == (0, 0)
    assert f"--max-restarts={spec.kubernetes.max_restarts}" in job["template"]["spec"]["containers"][0]["args"]


def test_lifetimes_come_from_the_spec() -> None:
    data = small_spec_data()
    data["kubernetes"].update(active_deadline=7200, ttl_after_finished=0, termination_grace=300)
    job = workload(render_objects(spec_of(data)))
    assert job["spec"]["activeDeadlineSeconds"] == 7200
    assert job["spec"]["ttlSecondsAfterFinished"] == 0
    assert job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 300
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert env_of(container)["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"]["value"] == "270"  # ends before the SIGKILL
    assert job["metadata"]["annotations"][SPEC_HASH_ANNOTATION] == spec_of(data).spec_hash()


@pytest.mark.parametrize("backend", ["deepspeed", "ray"])
@pytest.mark.parametrize("queue", [None, "team-a"], ids=["no-queue", "queue"])
def test_kueue_queue_label_and_suspend(backend: str, queue: str | None) -> None:
    data = small_spec_data(backend)
    if queue:
        data["kubernetes"]["queue"] = queue
    obj = workload(render_objects(spec_of(data)))
    assert obj["metadata"]["labels"].get(QUEUE_LABEL) == queue
    assert obj["spec"].get("suspend", False) is bool(queue)


def test_host_network_uses_cluster_dns() -> None:
    data = small_spec_data()
    data["kubernetes"]["host_network"] = True
    pod = workload(render_objects(spec_of(data)))["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"


def test_plain_credential_file_variable_wins_over_the_mounted_secret() -> None:
    data = small_spec_data()
    data["kubernetes"]["secrets"] = {"s3": "s3-creds"}
    data["kubernetes"]["env"] = {"AWS_CONFIG_FILE": "/etc/aws/config"}
    container = workload(render_objects(spec_of(data)))["spec"]["template"]["spec"]["containers"][0]
    names = [entry["name"] for entry in container["env"]]
    assert names.count("AWS_CONFIG_FILE") == 1
    assert env_of(container)["AWS_CONFIG_FILE"] == {"name": "AWS_CONFIG_FILE", "value": "/etc/aws/config"}


# --- Ray: RayJob ------------------------------------------------------------------------------

def test_rayjob_runs_ray_train_on_a_cluster_of_its_own() -> None:
    spec = spec_of(small_spec_data("ray"))
    config, rayjob = (of_kind(render_objects(spec), kind) for kind in ("ConfigMap", "RayJob"))
    job = rayjob["spec"]
    workers = job["rayClusterSpec"]["workerGroupSpecs"]
    assert job["entrypoint"] == "python -m training.ray_entry /etc/dlaunch/job.json"
    # an unset TTL keeps the finished cluster's pods (and logs) a while instead of deleting them at once
    assert job["shutdownAfterJobFinishes"] is True and job["ttlSecondsAfterFinished"] == DEFAULT_RAY_TTL_S > 0
    assert job["rayClusterSpec"]["rayVersion"] == RAY_VERSION
    assert len(workers) == 1 and workers[0]["replicas"] == workers[0]["minReplicas"] == workers[0]["maxReplicas"] == 2
    assert workers[0]["template"]["spec"]["containers"][0]["resources"]["limits"][GPU_RESOURCE] == "8"
    for role, template in job_pods([rayjob]).items():
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        assert volumes["job-config"]["configMap"]["name"] == config["metadata"]["name"], role
    submitter = job["submitterPodTemplate"]["spec"]
    # the submitter gets only a writable /tmp as its home (its root filesystem is read-only)
    assert submitter["containers"][0]["env"] == [{"name": "HOME", "value": "/tmp"}]
    assert submitter["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    assert submitter["restartPolicy"] == "Never"


# --- scale ------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["deepspeed", "ray"])
def test_1024_nodes_render_as_many_objects_as_2(backend: str) -> None:
    counts = {}
    for nodes in (2, 1024):
        data = small_spec_data(backend)
        data["resources"]["nodes"] = nodes
        data["training"]["batch"] = {"global": nodes * 8 * 4, "micro": 2}
        objects = render_objects(spec_of(data))
        counts[nodes] = len(objects)
        for obj in objects:
            validate_object(obj)
        assert workload(objects)["spec"] == workload(objects)["spec"] | scale_fields(workload(objects), nodes)
    # ConfigMap, NetworkPolicy, then a Service and a Job, or a RayJob
    assert counts[2] == counts[1024] == (4 if backend == "deepspeed" else 3)


def scale_fields(obj: dict[str, Any], nodes: int) -> dict[str, Any]:
    """Where the node count shows in a workload's spec."""
    if obj["kind"] == "Job":
        return {"completions": nodes, "parallelism": nodes}
    group = obj["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == nodes
    return {}


# --- formats, plans and the CLI ---------------------------------------------------------------

def test_json_format_is_a_list_of_the_same_objects(example: Path) -> None:
    listed = json.loads(render_documents(example, "json"))
    assert listed["kind"] == "List" and listed["apiVersion"] == "v1"
    assert listed["items"] == [d for d in yaml.safe_load_all(render_documents(example, "yaml")) if d]


def test_helm_values_satisfy_the_chart_schema(example: Path) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load(render_documents(example, "helm-values")))


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="helm-values"):
        render_documents(spec_of(small_spec_data()), "toml")


def test_render_accepts_the_planner_plan_as_well_as_the_layout(example: Path) -> None:
    spec = load_example(example)
    assert render(spec, plan_job(spec)) == render(spec, plan_for_render(spec))


def test_rank_selectors_find_node_pods() -> None:
    assert rank_selector(spec_of(small_spec_data()), 3) == \
        "dlaunch.dev/job=unit-k8s,batch.kubernetes.io/job-completion-index=3"
    assert rank_selector(spec_of(small_spec_data("ray")), 0) == "dlaunch.dev/job=unit-k8s,ray.io/node-type=head"


@pytest.mark.parametrize("fmt", ["yaml", "json", "helm-values"])
def test_cli_prints_exactly_render_documents(example: Path, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(example), "--format", fmt]) == 0
    assert capsys.readouterr().out == render_documents(example, fmt)


@pytest.mark.parametrize("fmt,suffix", [("yaml", ".yaml"), ("json", ".json"), ("helm-values", ".values.yaml")])
def test_cli_writes_into_an_output_directory(fmt: str, suffix: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    example = KUBERNETES_EXAMPLES[0]
    out_dir = tmp_path / "manifests"
    assert main(["render", str(example), "-o", str(out_dir), "--format", fmt]) == 0
    written = out_dir / f"{load_example(example).name}{suffix}"
    assert written.read_text() == render_documents(example, fmt)
    captured = capsys.readouterr()
    assert captured.out == "" and str(written) in captured.err


def test_render_documents_names_the_spec_file_in_errors(tmp_path: Path) -> None:
    data = small_spec_data()
    data["kubernetes"]["env"] = {"HOME": "/root"}
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as caught:
        render_documents(spec_file)
    assert caught.value.source == str(spec_file)


def test_loaded_text_spec_renders_like_the_file(example: Path) -> None:
    spec = load_spec_text(example.read_text(), str(example)).spec
    assert render_documents(spec) == render_documents(example)


# --- k8s/: namespace, RBAC, kind ---------------------------------------------------------------

K8S_DIR = REPO / "k8s"
REQUIRED_ACCESS = {
    ("", "configmaps"): {"create", "patch", "get", "list", "watch", "delete"},
    ("", "services"): {"create", "patch", "get", "list", "watch", "delete"},
    ("batch", "jobs"): {"create", "patch", "get", "list", "watch", "delete"},
    ("ray.io", "rayjobs"): {"create", "patch", "get", "list", "watch", "delete"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "pods/log"): {"get", "list", "watch"},
    ("", "events"): {"get", "list", "watch"},
    # the job's NetworkPolicy, and owner references with blockOwnerDeletion from its ConfigMap,
    # Service and NetworkPolicy to the Job or RayJob
    ("networking.k8s.io", "networkpolicies"): {"create", "patch", "get", "list", "delete"},
    ("batch", "jobs/finalizers"): {"update"},
    ("ray.io", "rayjobs/finalizers"): {"update"},
    # what pre-flight reads: the namespace's Pod Security level, the ServiceAccount, the Secrets'
    # keys (never their values), quotas, and Kueue's queues and workloads
    ("", "namespaces"): {"get"},
    ("", "serviceaccounts"): {"get"},
    ("", "secrets"): {"get"},
    ("", "resourcequotas"): {"list"},
    ("kueue.x-k8s.io", "localqueues"): {"list"},
    ("kueue.x-k8s.io", "workloads"): {"list"},
}


def k8s_documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S_DIR / name).read_text()) if doc]


@pytest.mark.parametrize("name", ["namespace.yaml", "rbac.yaml"])
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_cluster_setup_validates(name: str, version: str) -> None:
    for doc in k8s_documents(name):
        kubernetes_validate.validate(doc, version, strict=True)


def test_role_grants_exactly_what_dlaunch_needs() -> None:
    role = next(doc for doc in k8s_documents("rbac.yaml") if doc["kind"] == "Role")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == REQUIRED_ACCESS
    binding = next(doc for doc in k8s_documents("rbac.yaml") if doc["kind"] == "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_namespace_enforces_the_restricted_profile_examples_meet() -> None:
    (namespace,) = k8s_documents("namespace.yaml")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    kind_example = load_example(REPO / "examples" / "kind-quickstart.yaml")
    assert kind_example.kubernetes.namespace == namespace["metadata"]["name"]


def test_kind_cluster_has_room_for_two_node_jobs() -> None:
    (cluster,) = k8s_documents("kind-cluster.yaml")
    assert (cluster["kind"], cluster["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    assert [n["role"] for n in cluster["nodes"]].count("worker") >= load_example(
        REPO / "examples" / "kind-quickstart.yaml").resources.nodes


def test_test_helpers_detect_restricted_violations() -> None:
    """The restricted-profile check used above flags what it should."""
    pod = copy.deepcopy(workload(render_objects(spec_of(small_spec_data())))["spec"]["template"]["spec"])
    assert restricted_violations(pod) == []
    pod["hostNetwork"] = True
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    assert len(restricted_violations(pod)) == 3
