"""Pre-flight checks of `submit` against the fake API server: each failure's exact one-line cause and fix,
and nothing created when any fails."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from launcher.targets.kubernetes.preflight import PreflightError, needed_access, resource_name
from tests.fake_kube.cluster_sim import local_queue, node, secret
from tests.fake_kube.fixtures import (  # noqa: F401 - fixtures
    NAMESPACE, buckets, fake_kube, k8s_spec, kubeconfig, rendered, submit,
)
from tests.fake_kube.server import FakeKubeApi

HEAD = f"pre-flight checks failed for job kjob in namespace {NAMESPACE}; nothing was created:"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
GPU_RESOURCES = {"nodes": 2, "gpus_per_node": 8, "gpu_type": "H100-80GB", "cpu": 32, "memory": "256Gi",
                 "shm": "16Gi"}


def gpu_spec(**kubernetes: Any) -> dict[str, Any]:
    """A 2-node job of 8 GPUs each (batch 64 = 16 ranks x micro 4)."""
    return k8s_spec(resources=GPU_RESOURCES, kubernetes=kubernetes)


@dataclass
class Case:
    spec: dict[str, Any]
    problems: list[str]
    setup: Callable[[FakeKubeApi], Any] = lambda fake: None
    notes: list[str] = field(default_factory=list)


def add_all(*objects: dict[str, Any]) -> Callable[[FakeKubeApi], None]:
    return lambda fake: [fake.add(obj) for obj in objects]


S3_KEYS = "--from-file=credentials=$HOME/.aws/credentials"
FAILING = {
    "namespace-missing": Case(
        k8s_spec(kubernetes={"namespace": "nope"}),
        ["namespace 'nope' does not exist: create it (kubectl create namespace nope) or set kubernetes.namespace "
         "in the spec"]),
    "rbac-forbids-creating-jobs": Case(
        k8s_spec(),
        ["RBAC: alice@example.com may not create, patch jobs.batch in namespace 'dlaunch': ask a cluster admin to "
         "bind the dlaunch user role to you in this namespace (see k8s/README.md)"],
        lambda fake: (fake.deny("create", "jobs", "batch"), fake.deny("patch", "jobs", "batch"))),
    "kuberay-missing": Case(
        k8s_spec(backend="ray"), ["KubeRay is not installed: see k8s/README.md"],
        lambda fake: fake.uninstall("ray.io/v1")),
    "kueue-not-installed": Case(
        k8s_spec(kubernetes={"queue": "gpu-queue"}),
        ["Kueue is not installed, but kubernetes.queue names 'gpu-queue': install Kueue (see k8s/README.md) or "
         "remove kubernetes.queue"],
        lambda fake: (fake.uninstall("kueue.x-k8s.io/v1beta2"), fake.uninstall("kueue.x-k8s.io/v1beta1"))),
    "kueue-queue-missing": Case(
        k8s_spec(kubernetes={"queue": "gpu-queue"}),
        ["Kueue queue 'gpu-queue' does not exist in namespace 'dlaunch': create a LocalQueue named gpu-queue there "
         "(see k8s/README.md), or use one of: cpu-queue"],
        add_all(local_queue("cpu-queue", NAMESPACE))),
    "secret-missing": Case(
        k8s_spec(kubernetes={"secrets": {"s3": "s3-creds"}}),
        [f"Secret 's3-creds' (kubernetes.secrets.s3) does not exist in namespace 'dlaunch': create it: kubectl -n "
         f"dlaunch create secret generic s3-creds {S3_KEYS}"]),
    "secret-missing-a-key": Case(
        k8s_spec(kubernetes={"secrets": {"s3": "s3-creds"}}),
        [f"Secret 's3-creds' (kubernetes.secrets.s3) has no key credentials: recreate it with every key: "
         f"kubectl -n dlaunch create secret generic s3-creds {S3_KEYS} --dry-run=client -o yaml | kubectl apply -f -"],
        add_all(secret("s3-creds", NAMESPACE, ("config",)))),
    "wandb-secret-missing-its-key": Case(
        k8s_spec(kubernetes={"secrets": {"wandb": "wandb"}}),
        ["Secret 'wandb' (kubernetes.secrets.wandb) has no key netrc: recreate it with every key: kubectl -n "
         "dlaunch create secret generic wandb --from-file=netrc=$HOME/.netrc --dry-run=client -o yaml | kubectl "
         "apply -f -"],
        add_all(secret("wandb", NAMESPACE, ("api-key",)))),
    "image-pull-secret-missing": Case(
        k8s_spec(kubernetes={"image_pull_secrets": ["regcred"]}),
        ["Secret 'regcred' (kubernetes.image_pull_secrets) does not exist in namespace 'dlaunch': create it: kubectl "
         "-n dlaunch create secret docker-registry regcred --docker-server=REGISTRY --docker-username=USER "
         "--docker-password=TOKEN"]),
    "too-few-gpus-on-every-node": Case(
        gpu_spec(),
        ["no node can ever run a pod of this job (8 nvidia.com/gpu each): of 3 nodes, 3 have fewer than 8 "
         "allocatable nvidia.com/gpu: request at most 4 GPUs per node (resources.gpus_per_node)"],
        add_all(*(node(f"gpu-{i}", gpus=4, cpu="64", memory="512Gi") for i in range(3)))),
    "gpu-nodes-tainted": Case(
        gpu_spec(),
        ["no node can ever run a pod of this job (8 nvidia.com/gpu each): of 3 nodes, 1 has fewer than 8 "
         "allocatable nvidia.com/gpu, 2 have the untolerated taint nvidia.com/gpu=present:NoSchedule: tolerate the "
         "taint under kubernetes.tolerations"],
        add_all(node("cpu-0"), *(node(f"gpu-{i}", gpus=8, cpu="64", memory="512Gi", taints=(GPU_TAINT,))
                                 for i in range(2)))),
    "no-node-matches-the-selector": Case(
        gpu_spec(node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}),
        ["no node can ever run a pod of this job (8 nvidia.com/gpu each): of 1 nodes, 1 has labels that do not "
         "match kubernetes.node_selector: fix kubernetes.node_selector"],
        add_all(node("a100-0", gpus=8, cpu="64", memory="512Gi", labels={"nvidia.com/gpu.product": "A100"}))),
    "several-problems-at-once": Case(
        k8s_spec(kubernetes={"queue": "gpu-queue", "secrets": {"s3": "s3-creds"}}),
        ["Kueue queue 'gpu-queue' does not exist in namespace 'dlaunch': create a LocalQueue named gpu-queue there "
         "(see k8s/README.md)",
         f"Secret 's3-creds' (kubernetes.secrets.s3) does not exist in namespace 'dlaunch': create it: kubectl -n "
         f"dlaunch create secret generic s3-creds {S3_KEYS}"]),
}


@pytest.mark.parametrize("case", list(FAILING.values()), ids=list(FAILING))
def test_each_preflight_failure_says_why_and_what_to_do(case: Case, fake_kube: FakeKubeApi, kubeconfig: Path) -> None:
    case.setup(fake_kube)
    with pytest.raises(PreflightError) as caught:
        submit(case.spec)
    assert str(caught.value) == "\n".join([HEAD.replace(NAMESPACE, case.spec["kubernetes"]["namespace"]),
                                           *(f"  - {line}" for line in case.problems)])
    assert caught.value.exit_code == 2
    assert fake_kube.count("PATCH") == 0


PASSING = {
    "gpus-fit-with-a-toleration": Case(
        gpu_spec(tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]), [],
        add_all(node("cpu-0"), node("gpu-0", gpus=8, cpu="64", memory="512Gi", taints=(GPU_TAINT,)))),
    "secrets-and-queue-present": Case(
        k8s_spec(kubernetes={"queue": "gpu-queue", "secrets": {"s3": "s3-creds", "wandb": "wandb"},
                             "image_pull_secrets": ["regcred"]}), [],
        add_all(local_queue("gpu-queue", NAMESPACE), secret("regcred", NAMESPACE, (".dockerconfigjson",)),
                secret("s3-creds", NAMESPACE, ("credentials",)), secret("wandb", NAMESPACE, ("netrc",)))),
    "ray-with-kuberay": Case(k8s_spec(backend="ray"), []),
    "secrets-unreadable-is-a-note": Case(
        k8s_spec(kubernetes={"secrets": {"s3": "s3-creds"}}), [], lambda fake: fake.deny("get", "secrets"),
        ["note: cannot check Secret 's3-creds' (kubernetes.secrets.s3): you may not read Secrets here"]),
    "nodes-unlistable-is-a-note": Case(
        gpu_spec(), [], lambda fake: fake.deny("list", "nodes"),
        ["note: cannot check that a node can hold this job's pods: you may not list nodes"]),
}


@pytest.mark.parametrize("case", list(PASSING.values()), ids=list(PASSING))
def test_preflight_passes_and_the_job_is_created(case: Case, fake_kube: FakeKubeApi, kubeconfig: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    case.setup(fake_kube)
    assert submit(case.spec) == 0
    kind = ("ray.io/v1", "RayJob") if case.spec["backend"] == "ray" else ("batch/v1", "Job")
    assert fake_kube.get(*kind, "kjob", NAMESPACE) is not None
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")] == case.notes


def test_an_unreachable_cluster_is_the_only_problem_reported(fake_kube: FakeKubeApi, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("KUBECONFIG", str(fake_kube.write_kubeconfig(tmp_path / "kubeconfig", server=server)))
    with pytest.raises(PreflightError) as caught:
        submit(k8s_spec())
    assert str(caught.value) == (
        f"{HEAD}\n  - cannot reach the Kubernetes API server at {server} (connection failed: connection refused): "
        "check that the cluster is running and that kubeconfig context 'fake' points at it (kubectl cluster-info)")


def test_expired_credentials_are_named(fake_kube: FakeKubeApi, kubeconfig: Path) -> None:
    fake_kube.expire_credentials()
    with pytest.raises(PreflightError) as caught:
        submit(k8s_spec())
    assert str(caught.value) == (
        f"{HEAD}\n  - the API server at {fake_kube.url} rejected your credentials (401 Unauthorized): they have "
        "probably expired: log in again to refresh them (e.g. aws eks update-kubeconfig, gcloud container clusters "
        "get-credentials, kind export kubeconfig)")
    assert fake_kube.count() == 1


def test_rbac_is_asked_with_one_access_review_per_verb_and_resource(fake_kube: FakeKubeApi,
                                                                     kubeconfig: Path) -> None:
    submit(k8s_spec())
    assert fake_kube.count("POST", "selfsubjectaccessreviews$") == 1 + 2 * 4  # get job; create, patch each object


@pytest.mark.parametrize("options, extra", [
    ({}, []),
    ({"replace": True}, [("delete", "jobs.batch")]),
    ({"wait": True}, [("watch", "jobs.batch")]),
    ({"follow": True}, [("watch", "jobs.batch"), ("list", "pods"), ("get", "pods/log")]),
], ids=["submit", "replace", "wait", "follow"])
def test_the_access_needed_follows_the_options(options: dict[str, bool], extra: list[tuple[str, str]]) -> None:
    job, objects = rendered(k8s_spec())
    needs = needed_access(job, objects, options.get("wait", False), options.get("follow", False),
                          options.get("replace", False))
    assert [(verb, resource_name(kind, sub)) for verb, kind, sub in needs] == [
        ("get", "jobs.batch"), ("create", "configmaps"), ("patch", "configmaps"),
        ("create", "networkpolicies.networking.k8s.io"), ("patch", "networkpolicies.networking.k8s.io"),
        ("create", "services"), ("patch", "services"), ("create", "jobs.batch"), ("patch", "jobs.batch"), *extra]
