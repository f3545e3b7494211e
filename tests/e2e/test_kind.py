"""The real-cluster suite: dlaunch against Kubernetes on a local kind cluster.

A kind cluster is created from `k8s/kind-cluster.yaml` and the worker image built and loaded
into it. Checkpoints go to S3 (SeaweedFS on this machine, reached by the pods through the kind
network), the storage every pod of a multi-node job must share. Then:

- the quickstart runs as a 2-node CPU DeepSpeed job and is followed to success;
- a 2-node DeepSpeed job has one pod killed mid-run and resumes from its last committed
  checkpoint (the pod exits 75 within the grace period, which the Job ignores);
- a 2-node Ray job (KubeRay operator installed with Helm) commits checkpoints from its worker
  pods and succeeds, its pods Ready (KubeRay's HTTP probes, by the rendered `rayVersion`).

Needs Docker (a running engine) and kind; skips with the reason where either is missing (as on
CI). Run it with `scripts/e2e_kind.sh` (`make e2e-kind`); tests/e2e/README.md has the details.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = os.environ.get("E2E_KIND_CLUSTER", "dlaunch-e2e")
IMAGE = "dlaunch:dev"
NAMESPACE = "dlaunch"
S3_SECRET = "e2e-s3"
CHECKPOINT_TIMEOUT_S = 1200
JOB_TIMEOUT_S = 2400
# KubeRay 1.6 is the first operator that gives Ray >= 2.53 pods HTTP probes (no wget).
KUBERAY_CHART = ("https://ray-project.github.io/kuberay-helm/", "kuberay-operator", "1.6.2")
# The Ray head's rendered resources fit a GPU cluster; shrink them to fit a laptop's kind nodes.
KIND_RAY_HEAD = {"cpu": "1", "memory": "3Gi"}

pytestmark = pytest.mark.timeout(3 * 3600)


def missing_requirement() -> str | None:
    """Why this machine cannot run the suite, or None if it can."""
    if shutil.which("docker") is None:
        return "docker is not installed (kind runs Kubernetes nodes as Docker containers)"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker engine answers (`docker info` failed)"
    if shutil.which("kind") is None:
        return "kind is not installed (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
    return None


def run(*command: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command from the repository root; fail the test with its output if it fails."""
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def build_image() -> None:
    """The project's image plus the quickstart's training text, loaded into the kind nodes."""
    if "E2E_IMAGE" in os.environ:
        run("docker", "tag", os.environ["E2E_IMAGE"], IMAGE)
    else:
        run("docker", "build", "-t", "dlaunch:e2e-base", ".")
        run("docker", "build", "-t", IMAGE, "--build-arg", "BASE=dlaunch:e2e-base", "-f",
            "tests/e2e/Dockerfile.quickstart", "tests/e2e")
    run("kind", "load", "docker-image", IMAGE, "--name", CLUSTER)


@pytest.fixture(scope="module")
def kind_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A kind cluster from k8s/ with the image loaded and namespace `dlaunch`; $KUBECONFIG points at it."""
    reason = missing_requirement()
    if reason is not None:
        pytest.skip(f"e2e: needs Docker and kind: {reason}")
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    existing = run("kind", "get", "clusters").stdout.split()
    if CLUSTER not in existing:
        run("kind", "create", "cluster", "--name", CLUSTER, "--config", "k8s/kind-cluster.yaml", "--wait", "300s")
    run("kind", "export", "kubeconfig", "--name", CLUSTER, "--kubeconfig", str(kubeconfig))
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(kubeconfig)
    try:
        build_image()
        apply_namespace()
        yield kubeconfig
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        if os.environ.get("E2E_KEEP_CLUSTER") != "1":
            subprocess.run(["kind", "delete", "cluster", "--name", CLUSTER], cwd=REPO, capture_output=True)


def apply_namespace() -> None:
    from kubernetes import config, utils

    client = config.new_client_from_config(config_file=os.environ["KUBECONFIG"])
    try:
        utils.create_from_yaml(client, str(REPO / "k8s" / "namespace.yaml"))
    except utils.FailToCreateError as exc:
        if any(error.status != 409 for error in exc.api_exceptions):
            raise


def kind_gateway() -> str:
    """The host's address on the `kind` Docker network: pods reach services on this machine there."""
    networks = json.loads(run("docker", "network", "inspect", "kind").stdout)
    gateways = [c.get("Gateway", "") for c in networks[0]["IPAM"]["Config"]]
    return next(g for g in gateways if g.count(".") == 3)


@pytest.fixture(scope="module")
def s3(kind_cluster: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """SeaweedFS on this machine, listening where the pods can reach it; a Secret with its keys."""
    from tests.s3server import SeaweedS3

    gateway = kind_gateway()

    class KindReachableS3(SeaweedS3):
        @property
        def endpoint_url(self) -> str:
            return f"http://{gateway}:{self.ports['s3.port']}"

        def command(self) -> list[str]:
            return [{"-ip=127.0.0.1": f"-ip={gateway}", "-ip.bind=127.0.0.1": "-ip.bind=0.0.0.0"}.get(part, part)
                    for part in super().command()]

    with KindReachableS3.running(tmp_path_factory.mktemp("s3")) as server:
        server.create_bucket("dlaunch-e2e")
        create_s3_secret(server)
        yield server


def create_s3_secret(server: Any) -> None:
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=os.environ["KUBECONFIG"]))
    env = server.env()
    # The files pods read (launcher/targets/kubernetes/pods.py SECRET_MOUNTS): an AWS shared
    # credentials file, and a config file with the endpoint of this S3-compatible server.
    keys = {"credentials": f"[default]\naws_access_key_id = {env['AWS_ACCESS_KEY_ID']}\n"
                           f"aws_secret_access_key = {env['AWS_SECRET_ACCESS_KEY']}\n",
            "config": f"[default]\nendpoint_url = {env['AWS_ENDPOINT_URL']}\n"}
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": S3_SECRET, "namespace": NAMESPACE},
            "stringData": keys}
    api.patch_namespaced_secret(S3_SECRET, NAMESPACE, body, field_manager="dlaunch-e2e", force=True,
                                _content_type="application/apply-patch+yaml")


def quickstart(**changes: Any) -> Any:
    """examples/kind-quickstart.yaml as a JobSpec, with top-level sections updated by `changes`
    (one level deep: `training={"checkpoint": {...}}` replaces the whole checkpoint section)."""
    from launcher.spec import load_spec_text

    spec = yaml.safe_load((REPO / "examples" / "kind-quickstart.yaml").read_text())
    for key, value in changes.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) else value
    return load_spec_text(yaml.safe_dump(spec), "examples/kind-quickstart.yaml").spec


S3_CHECKPOINTS = {"uri": "s3://dlaunch-e2e/runs", "every_steps": 25, "keep_last": 2}


def shrink_ray_head(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rendered objects with the Ray head's requests and limits cut to KIND_RAY_HEAD."""
    for obj in objects:
        if obj["kind"] == "RayJob":
            container = obj["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
            container["resources"] = {"limits": dict(KIND_RAY_HEAD), "requests": dict(KIND_RAY_HEAD)}
    return objects


def submit(spec: Any, **options: bool) -> int:
    from launcher.cli.submit import submit_to_cluster
    from launcher.targets.kubernetes.render import plan_for_render, render

    return submit_to_cluster(spec, shrink_ray_head(render(spec, plan_for_render(spec))), context=None,
                             namespace=None, dry_run_server=False, wait=options.get("wait", False),
                             follow=options.get("follow", False), replace=True)


def test_quickstart_runs_to_success_on_two_nodes(kind_cluster: Path, s3: Any) -> None:
    from launcher.targets.kubernetes.backend import KubernetesBackend

    spec = quickstart(kubernetes={"secrets": {"s3": S3_SECRET}}, training={"checkpoint": S3_CHECKPOINTS})
    assert submit(spec, follow=True) == 0
    status = KubernetesBackend.connect(None, NAMESPACE).get_job(spec.name)
    assert status.state.phase == "Succeeded"
    assert [(row.index, row.phase) for row in status.pods] == [(0, "Succeeded"), (1, "Succeeded")]


def wait_for_checkpoint(spec: Any, env: dict[str, str]) -> int:
    """Poll S3 until the job has committed a checkpoint; its step."""
    from launcher.targets.checkpoints import checkpoint_info_for

    deadline = time.monotonic() + CHECKPOINT_TIMEOUT_S
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        while time.monotonic() < deadline:
            info = checkpoint_info_for(spec.training.checkpoint.uri, spec.name, spec.training.checkpoint.endpoint_url)
            if info.step is not None:
                return info.step
            time.sleep(5)
    pytest.fail(f"no checkpoint of {spec.name} after {CHECKPOINT_TIMEOUT_S} s")


def resume_events(backend: Any, name: str) -> list[dict[str, Any]]:
    """The `resume` events in every pod's log of the job."""
    lines: list[str] = []
    backend.get_job_logs(name, every=True, follow=False, write=lines.append)
    return [json.loads(line[line.index("{"):]) for line in lines if '"event": "resume"' in line]


def test_two_node_deepspeed_job_killed_mid_run_resumes(kind_cluster: Path, s3: Any) -> None:
    from launcher.targets.kubernetes.backend import KubernetesBackend
    from launcher.targets.kubernetes.client import POD

    spec = quickstart(name="kind-resume", kubernetes={"max_restarts": 3, "secrets": {"s3": S3_SECRET}},
                      training={"checkpoint": S3_CHECKPOINTS})
    assert submit(spec) == 0
    backend = KubernetesBackend.connect(None, NAMESPACE)
    step = wait_for_checkpoint(spec, s3.env())
    victim = next(row.name for row in backend.get_job(spec.name).pods if row.index == 1)
    assert backend.client.delete(POD, victim)  # SIGTERM: workers checkpoint, the agent exits 75 (ignored)
    assert backend.wait_for_job_status(spec.name).phase == "Succeeded"
    resumed = resume_events(backend, spec.name)
    assert resumed and max(event["step"] for event in resumed) >= step
    assert next(row for row in backend.get_job(spec.name).pods if row.index == 1).restarts >= 1


@pytest.fixture(scope="module")
def kuberay(kind_cluster: Path) -> str:
    """The KubeRay operator, installed with its Helm chart (KUBERAY_CHART); its namespace."""
    from conftest_k8s import helm_binary

    repo, chart, version = KUBERAY_CHART
    run(helm_binary(), "upgrade", "--install", "kuberay-operator", chart, "--repo", repo, "--version", version,
        "--namespace", "kuberay-system", "--create-namespace", "--wait", "--timeout", "600s")
    return "kuberay-system"


def rayjob_status(name: str) -> dict[str, Any]:
    from kubernetes import client, config

    api = client.CustomObjectsApi(config.new_client_from_config(config_file=os.environ["KUBECONFIG"]))
    return api.get_namespaced_custom_object("ray.io", "v1", NAMESPACE, "rayjobs", name).get("status") or {}


def wait_for_rayjob(name: str) -> dict[str, Any]:
    """Poll the RayJob until KubeRay marks it Complete or Failed; its status."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        status = rayjob_status(name)
        if status.get("jobDeploymentStatus") in ("Complete", "Failed", "ValidationFailed"):
            return status
        time.sleep(10)
    pytest.fail(f"RayJob {name} did not finish within {JOB_TIMEOUT_S} s: {rayjob_status(name)}")


def test_two_node_ray_job_commits_a_checkpoint(kind_cluster: Path, s3: Any, kuberay: str) -> None:
    """Rank 0 runs on a worker pod (the head has no GPU, and no Ray Train worker here either):
    committing a checkpoint from there is what a head-local Ray storage path broke."""
    spec = quickstart(name="kind-ray", backend="ray", kubernetes={"secrets": {"s3": S3_SECRET}},
                      training={"checkpoint": S3_CHECKPOINTS, "max_steps": 60})
    assert submit(spec) == 0
    step = wait_for_checkpoint(spec, s3.env())
    status = wait_for_rayjob(spec.name)
    assert (status["jobDeploymentStatus"], status.get("jobStatus")) == ("Complete", "SUCCEEDED"), status
    assert step >= S3_CHECKPOINTS["every_steps"]
