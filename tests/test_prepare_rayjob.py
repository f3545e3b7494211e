"""`dlaunch prepare DATA_SPEC --on CLUSTER_SPEC`: the prepare RayJob, rendered, refused and applied.

The objects are checked against the vendored KubeRay CRD and the Kubernetes schemas, then applied
to the fake API server through the CLI; `ray.init`'s address choice is checked without a Ray.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest_k8s import all_pod_templates, env_of, restricted_violations, validate_object

from launcher.spec import load_spec
from launcher.targets.kubernetes.client import is_dlaunch_job
from launcher.targets.kubernetes.pods import GPU_RESOURCE, JOB_LABEL
from launcher.targets.kubernetes.prepare_job import (
    MAX_CLUSTER_NAME, PREPARE_ENTRYPOINT, PREPARE_LABEL, SPEC_FILE, cluster_problems, render_prepare,
)
from tests.fake_kube.fixtures import NAMESPACE, buckets, fake_kube, in_background, k8s_spec, kubeconfig  # noqa: F401
from tests.fake_kube.server import FakeKubeApi
from training.data.prepare import run as prepare_run
from training.data.prepare.config import PrepareSpec, load_prepare_spec

DATA = {"inputs": ["s3://corpora/pile/train/"], "output": "s3://corpora/prepared/pile-v1",
        "tokenizer": {"vocab_size": 32000}, "num_cpus": 3, "engine": "inline"}
# Two Ray workers of 8 CPUs; the spec asks for GPUs, which tokenizing must not request.
CLUSTER = k8s_spec(backend="ray", resources={"nodes": 2, "gpus_per_node": 4, "cpu": 8, "memory": "32Gi"},
                   kubernetes={"secrets": {"s3": "s3-credentials"}, "node_selector": {"pool": "cpu"}})
CLUSTER["training"]["batch"] = {"global": 64, "micro": 8}


def write(tmp_path: Path, name: str, content: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def specs(tmp_path: Path) -> tuple[Path, Path]:
    """(data spec, cluster spec) files."""
    return write(tmp_path, "data.yaml", DATA), write(tmp_path, "cluster.yaml", CLUSTER)


def rendered(data: Path, cluster: Path) -> list[dict[str, Any]]:
    return render_prepare(load_spec(cluster).spec, load_prepare_spec(data))[1]


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {obj["kind"]: obj for obj in objects}


# ----- rendering ------------------------------------------------------------------------------------
def test_dry_run_prints_exactly_the_objects_and_they_validate(specs: tuple[Path, Path], run_cli: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")  # no cluster is needed
    result = run_cli("prepare", str(specs[0]), "--on", str(specs[1]), "--dry-run")
    assert result.code == 0, result.err
    objects = list(yaml.safe_load_all(result.out))
    assert objects == rendered(*specs)
    assert [obj["kind"] for obj in objects] == ["ConfigMap", "NetworkPolicy", "RayJob"]
    for obj in objects:
        validate_object(obj)  # the RayJob against the vendored KubeRay CRD, closed to unknown fields
    for role, template in all_pod_templates(objects).items():
        assert restricted_violations(template["spec"]) == [], role


def test_the_rayjob_runs_the_prepare_module_on_the_data_spec_from_its_configmap(specs: tuple[Path, Path]) -> None:
    objects = by_kind(rendered(*specs))
    config_map, rayjob = objects["ConfigMap"], objects["RayJob"]
    assert rayjob["metadata"]["name"] == "kjob-prepare" and config_map["metadata"]["name"] == "kjob-prepare-config"
    assert rayjob["spec"]["entrypoint"] == PREPARE_ENTRYPOINT == (
        "python -m training.data.prepare.run /etc/dlaunch/prepare.json")
    data = json.loads(config_map["data"][Path(SPEC_FILE).name])
    assert data["engine"] == "ray" and data["num_cpus"] is None  # the cluster's Ray, not a local one
    assert PrepareSpec.model_validate(data).inputs == DATA["inputs"]
    # Every Ray pod mounts that ConfigMap where the entrypoint reads it, and gets the S3 credentials.
    for role in ("head", "workers"):
        pod = all_pod_templates([rayjob])[role]["spec"]
        volume = next(v for v in pod["volumes"] if v.get("configMap"))
        assert volume["configMap"]["name"] == "kjob-prepare-config"
        container = pod["containers"][0]
        mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
        assert SPEC_FILE.startswith(mount["mountPath"] + "/")
        assert "AWS_SHARED_CREDENTIALS_FILE" in env_of(container)
        assert pod["nodeSelector"] == {"pool": "cpu"}


def test_workers_are_the_cluster_specs_nodes_with_its_cpu_and_memory_and_no_gpus(specs: tuple[Path, Path]) -> None:
    rayjob = by_kind(rendered(*specs))["RayJob"]
    (group,) = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 2
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "8", "memory": "32Gi"}
    assert GPU_RESOURCE not in json.dumps([t["spec"]["containers"] for t in all_pod_templates([rayjob]).values()])


def test_every_object_and_pod_is_labelled_as_the_prepare_job(specs: tuple[Path, Path]) -> None:
    objects = rendered(*specs)
    labelled = [obj["metadata"] for obj in objects] + [t["metadata"] for t in all_pod_templates(objects).values()]
    for meta in labelled:
        assert meta["labels"][JOB_LABEL] == "kjob-prepare"
        assert len(meta["labels"][PREPARE_LABEL]) == 16
    assert is_dlaunch_job(by_kind(objects)["RayJob"], "kjob-prepare")  # what status/logs/cancel look for


def test_a_changed_data_spec_changes_the_spec_hash(tmp_path: Path, specs: tuple[Path, Path]) -> None:
    other = write(tmp_path, "other.yaml", {**DATA, "shard_mb": 128})
    hashes = {by_kind(rendered(data, specs[1]))["RayJob"]["metadata"]["annotations"]["dlaunch.dev/spec-hash"]
              for data in (specs[0], other)}
    assert len(hashes) == 2


# ----- refusals -----------------------------------------------------------------------------------
@pytest.mark.parametrize("change, field", [
    ({"inputs": ["s3://corpora/a/", "extra/*.jsonl.zst"]}, "inputs[1]"),
    ({"output": "prepared/pile-v1"}, "output"),
])
def test_local_paths_are_refused_naming_the_field(change: dict[str, Any], field: str, tmp_path: Path,
                                                  specs: tuple[Path, Path], run_cli: Any) -> None:
    data = write(tmp_path, "local.yaml", {**DATA, **change})
    result = run_cli("prepare", str(data), "--on", str(specs[1]), "--dry-run")
    assert result.code == 2
    assert f"{data}: {field}: is not an s3:// URI" in result.err
    assert "Traceback" not in result.err and result.out == ""


def test_a_cluster_spec_not_for_kubernetes_is_refused_naming_target(tmp_path: Path, specs: tuple[Path, Path],
                                                                    run_cli: Any) -> None:
    local = {key: value for key, value in CLUSTER.items() if key not in ("image", "kubernetes")}
    cluster = write(tmp_path, "local.yaml", {**local, "target": "local", "resources": {"nodes": 1}})
    result = run_cli("prepare", str(specs[0]), "--on", str(cluster), "--dry-run")
    assert result.code == 2
    assert f"{cluster}: target: must be kubernetes" in result.err and "Traceback" not in result.err


def test_a_name_whose_rayjob_name_kuberay_refuses_is_refused(tmp_path: Path, specs: tuple[Path, Path],
                                                             run_cli: Any) -> None:
    """KubeRay caps RayJob names at 47 characters: `<name>-prepare` leaves 39 for the name."""
    assert MAX_CLUSTER_NAME == 39
    fits = load_spec(write(tmp_path, "fits.yaml", {**CLUSTER, "name": "a" * 39})).spec
    assert cluster_problems(fits) == []
    cluster = write(tmp_path, "long.yaml", {**CLUSTER, "name": "a" * 40})  # a valid job name
    result = run_cli("prepare", str(specs[0]), "--on", str(cluster), "--dry-run")
    assert result.code == 2
    assert f"{cluster}: name: gives the RayJob" in result.err and "at most 39 characters" in result.err


def test_cluster_options_need_on_and_local_options_refuse_it(specs: tuple[Path, Path], run_cli: Any) -> None:
    assert run_cli("prepare", str(specs[0]), "--dry-run").code == 2
    result = run_cli("prepare", str(specs[0]), "--on", str(specs[1]), "--inline")
    assert result.code == 2 and "--inline" in result.err
    both = run_cli("prepare", str(specs[0]), "--on", str(specs[1]), "--dry-run", "--wait")
    assert both.code == 2 and "--wait" in both.err


def test_the_pods_use_the_cluster_specs_s3_endpoint_unless_the_data_spec_names_one(tmp_path: Path) -> None:
    """A store other than AWS (MinIO, SeaweedFS) named only in the cluster spec's checkpoint settings
    is where the prepare pods read and write too; the data spec's own endpoint wins."""
    endpoint = "http://minio.storage.svc:9000"
    cluster = {**CLUSTER, "training": {**CLUSTER["training"],
                                       "checkpoint": {**CLUSTER["training"]["checkpoint"], "endpoint_url": endpoint}}}
    cluster_path = write(tmp_path, "cluster.yaml", cluster)
    for data, expected in ((DATA, endpoint), ({**DATA, "endpoint_url": "http://other:9000"}, "http://other:9000")):
        config_map = by_kind(rendered(write(tmp_path, "data.yaml", data), cluster_path))["ConfigMap"]
        assert json.loads(config_map["data"][Path(SPEC_FILE).name])["endpoint_url"] == expected


def test_a_bad_data_spec_is_an_error_not_a_traceback(tmp_path: Path, specs: tuple[Path, Path], run_cli: Any) -> None:
    data = write(tmp_path, "bad.yaml", {"inputs": ["s3://a/"]})
    result = run_cli("prepare", str(data), "--on", str(specs[1]), "--dry-run")
    assert result.code == 1 and "output" in result.err and "Traceback" not in result.err


# ----- applied to the fake API server --------------------------------------------------------------
@pytest.fixture
def cluster(fake_kube: FakeKubeApi, kubeconfig: Path) -> FakeKubeApi:
    """The fake API server, $KUBECONFIG pointing at it, with the S3 Secret the cluster spec names."""
    fake_kube.add({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-credentials", "namespace": NAMESPACE},
                   "data": {"credentials": "W2RlZmF1bHRdCg=="}})
    return fake_kube


def test_submit_creates_the_rayjob_and_its_owned_configmap(cluster: FakeKubeApi, specs: tuple[Path, Path],
                                                           run_cli: Any) -> None:
    fake_kube = cluster
    result = run_cli("prepare", str(specs[0]), "--on", str(specs[1]))
    assert result.code == 0, result.err
    rayjob = fake_kube.get("ray.io/v1", "RayJob", "kjob-prepare", NAMESPACE)
    config_map = fake_kube.get("v1", "ConfigMap", "kjob-prepare-config", NAMESPACE)
    assert rayjob is not None and config_map is not None
    assert rayjob["spec"]["entrypoint"] == PREPARE_ENTRYPOINT
    assert [(ref["kind"], ref["name"], ref["uid"]) for ref in config_map["metadata"]["ownerReferences"]] == [
        ("RayJob", "kjob-prepare", rayjob["metadata"]["uid"])]
    assert f"dlaunch status kjob-prepare -n {NAMESPACE}" in result.out
    # The training job's objects are untouched: none exist.
    assert fake_kube.get("ray.io/v1", "RayJob", "kjob", NAMESPACE) is None

    rayjob["status"] = {"jobStatus": "RUNNING", "jobDeploymentStatus": "Running"}
    fake_kube.add(rayjob)
    status = run_cli("status", "kjob-prepare", "-n", NAMESPACE)
    assert status.out.splitlines()[0] == f"job kjob-prepare (ray, namespace {NAMESPACE}): Running"
    assert "checkpoints: none: a prepare job writes a dataset (s3://" in status.out

    again = run_cli("prepare", str(specs[0]), "--on", str(specs[1]))
    assert again.code == 0 and "unchanged" in again.out


def test_wait_follows_the_rayjob_to_its_end(cluster: FakeKubeApi, specs: tuple[Path, Path], run_cli: Any) -> None:
    fake_kube = cluster
    def finish() -> None:
        rayjob = fake_kube.wait_for(lambda: fake_kube.get("ray.io/v1", "RayJob", "kjob-prepare", NAMESPACE))
        rayjob["status"] = {"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete"}
        fake_kube.add(rayjob)

    with in_background(finish):
        result = run_cli("prepare", str(specs[0]), "--on", str(specs[1]), "--wait")
    assert result.code == 0, result.err
    assert "job kjob-prepare succeeded" in result.out


# ----- the entrypoint joins the cluster's Ray -------------------------------------------------------
def test_ray_init_joins_the_cluster_ray_address_names() -> None:
    args = prepare_run.ray_init_args(3, {"RAY_ADDRESS": "10.0.0.7:6379"})
    assert args["address"] == "10.0.0.7:6379"
    assert "num_cpus" not in args and "include_dashboard" not in args  # ray.init refuses them on a cluster
    local = prepare_run.ray_init_args(3, {})
    assert "address" not in local and local["num_cpus"] == 3 and local["include_dashboard"] is False


def test_the_ray_job_calls_ray_init_with_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """`_ray_units` with a stand-in `ray` module: no Ray is started."""
    calls: list[dict[str, Any]] = []

    class Dataset:
        def map(self, *args: Any, **kwargs: Any) -> "Dataset":
            return self

        def iter_rows(self) -> list[Any]:
            return []

    ray = types.ModuleType("ray")
    ray.is_initialized = lambda: False  # type: ignore[attr-defined]
    ray.init = lambda **kwargs: calls.append(kwargs)  # type: ignore[attr-defined]
    data = types.ModuleType("ray.data")
    data.DataContext = types.SimpleNamespace(get_current=lambda: types.SimpleNamespace())  # type: ignore[attr-defined]
    data.from_items = lambda items, **kwargs: Dataset()  # type: ignore[attr-defined]
    ray.data = data  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setitem(sys.modules, "ray.data", data)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.7:6379")
    job = prepare_run.ShardJob(output="s3://b/o", task="causal_lm", text_field="text", label_field="label",
                               skip_bad_lines=False, tokenizer_json="{}", eos_id=0, dtype="uint16", endpoint_url=None)
    spec = PrepareSpec(inputs=["s3://b/i/"], output="s3://b/o", num_cpus=2)
    assert list(prepare_run._ray_units(spec, [], job)) == []
    assert [call.get("address") for call in calls] == ["10.0.0.7:6379"] and "num_cpus" not in calls[0]
