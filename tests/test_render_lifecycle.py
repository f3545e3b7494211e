"""How rendered jobs live and die on a real cluster: gang restarts against the Job controller's
per-index backoff, SIGTERM and torch elastic's shutdown window, KubeRay's probes and TTL, and
one Ray version for the RayJob and the image."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from conftest_k8s import CHART, REPO, env_of, render_objects, small_spec_data, spec_of
from launcher.targets.kubernetes.render import (
    DEFAULT_RAY_TTL_S, RAY_VERSION, RDZV_TIMEOUTS, elastic_shutdown_timeout,
)

# kubernetes/kubernetes pkg/controller/job/job_controller.go: DefaultJobPodFailureBackOff (10 s)
# doubled per failure up to MaxJobPodFailureBackOff (10 min), per index under backoffLimitPerIndex
# (backoff_utils.go getRemainingTimePerIndex).
MAX_POD_FAILURE_BACKOFF_S = 600
# ray-project/kuberay ray-operator/controllers/ray/common/pod.go supportsUnifiedHealthCheck.
KUBERAY_HTTP_PROBES_SINCE = Version("2.53.0")


def shared_spec_data(backend: str, kubernetes: dict[str, Any]) -> dict[str, Any]:
    """The small spec with checkpoints in S3 (multi-node pods need storage they share)."""
    data = small_spec_data(backend)
    data["kubernetes"].update(kubernetes)
    data["training"]["checkpoint"] = {"uri": "s3://unit-bucket/checkpoints"}
    return data


def indexed_job(**kubernetes: Any) -> dict[str, Any]:
    return next(o for o in render_objects(spec_of(shared_spec_data("deepspeed", kubernetes))) if o["kind"] == "Job")


def rayjob(**kubernetes: Any) -> dict[str, Any]:
    return next(o for o in render_objects(spec_of(shared_spec_data("ray", kubernetes))) if o["kind"] == "RayJob")


def job_spec_problems(spec: dict[str, Any]) -> list[str]:
    """The API server's rules for the fields dlaunch sets together (kubernetes/kubernetes
    pkg/apis/batch/validation/validation.go validateJobSpec, validatePodFailurePolicy,
    validatePodReplacementPolicy)."""
    problems = []
    indexed = spec.get("completionMode") == "Indexed"
    for field in ("backoffLimitPerIndex", "maxFailedIndexes"):
        if field in spec and not indexed:
            problems.append(f"{field}: requires indexed completion mode")
    if "maxFailedIndexes" in spec and "backoffLimitPerIndex" not in spec:
        problems.append("maxFailedIndexes: requires backoffLimitPerIndex")
    if spec.get("maxFailedIndexes", 0) > spec.get("completions", 0):
        problems.append("maxFailedIndexes: must be less than or equal to completions")
    rules = spec.get("podFailurePolicy", {}).get("rules", [])
    if any(rule["action"] == "FailIndex" for rule in rules) and "backoffLimitPerIndex" not in spec:
        problems.append("podFailurePolicy: FailIndex rule action requires the backoffLimitPerIndex to be set")
    if rules and spec.get("podReplacementPolicy", "Failed") != "Failed":
        problems.append("podReplacementPolicy: must be Failed when podFailurePolicy is specified")
    if rules and spec["template"]["spec"].get("restartPolicy") != "Never":
        problems.append("template.spec.restartPolicy: only Never is allowed with podFailurePolicy")
    return problems


# --- gang restarts ----------------------------------------------------------------------------

def test_the_job_replaces_only_ignored_failures_and_meets_the_api_rules() -> None:
    spec = indexed_job(max_restarts=5)["spec"]
    assert job_spec_problems(spec) == []
    assert (spec["backoffLimitPerIndex"], spec["maxFailedIndexes"]) == (0, 0)
    assert "backoffLimit" not in spec  # per-index limits govern; the job-wide default no longer multiplies
    container_args = spec["template"]["spec"]["containers"][0]["args"]
    assert "--max-restarts=5" in container_args


def test_the_constraint_checker_catches_what_the_api_server_refuses() -> None:
    spec = indexed_job()["spec"]
    broken = {**spec, "completionMode": "NonIndexed", "podReplacementPolicy": "TerminatingOrFailed",
              "podFailurePolicy": {"rules": [{"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [1]}}]}}
    broken.pop("backoffLimitPerIndex")
    assert len(job_spec_problems(broken)) == 4


def test_rendezvous_outlasts_the_longest_replacement_backoff() -> None:
    """Survivors of a lost pod wait in the rendezvous for its replacement, which the Job
    controller may hold back for up to the maximum per-index backoff."""
    assert RDZV_TIMEOUTS["join_timeout"] > MAX_POD_FAILURE_BACKOFF_S + 120
    env = env_of(indexed_job()["spec"]["template"]["spec"]["containers"][0])
    assert int(env["DLAUNCH_RDZV_WAIT_TIMEOUT"]["value"]) == RDZV_TIMEOUTS["join_timeout"]


# --- SIGTERM and the shutdown window ----------------------------------------------------------

@pytest.mark.parametrize("grace", [6, 10, 30, 60, 120, 300, 3600])
def test_elastic_shutdown_ends_before_the_kubelet_kills(grace: int) -> None:
    timeout = elastic_shutdown_timeout(grace)
    assert 1 <= timeout <= grace - 5
    env = env_of(indexed_job(termination_grace=grace)["spec"]["template"]["spec"]["containers"][0])
    assert env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"]["value"] == str(timeout)


# --- Ray: probes, TTL, version ----------------------------------------------------------------

def test_rayjob_declares_a_ray_version_that_gets_http_probes() -> None:
    cluster = rayjob()["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == RAY_VERSION
    assert Version(cluster["rayVersion"]) >= KUBERAY_HTTP_PROBES_SINCE


@pytest.mark.parametrize("ttl,expected", [(None, DEFAULT_RAY_TTL_S), (0, 0), (3600, 3600)])
def test_ray_ttl_defaults_to_keeping_the_cluster_a_while(ttl: int | None, expected: int) -> None:
    kubernetes = {} if ttl is None else {"ttl_after_finished": ttl}
    spec = rayjob(**kubernetes)["spec"]
    assert spec["ttlSecondsAfterFinished"] == expected and spec["shutdownAfterJobFinishes"] is True
    assert DEFAULT_RAY_TTL_S >= 300


def test_dockerfile_installs_the_ray_version_the_rayjob_declares() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    (declared,) = re.findall(r"(?m)^ARG RAY_VERSION=(\S+)$", dockerfile)
    assert declared == RAY_VERSION
    assert 'PIP_CONSTRAINT=/tmp/ray-constraint.txt make install' in dockerfile


def test_pyproject_allows_the_pinned_ray_version() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (ray,) = [Requirement(req) for req in extras["ray"] if Requirement(req).name == "ray"]
    assert ray.specifier.contains(RAY_VERSION)


def test_chart_defaults_carry_the_same_ray_version_and_ttl() -> None:
    ray = yaml.safe_load((CHART / "values.yaml").read_text())["ray"]
    assert (ray["version"], ray["defaultTtlAfterFinished"]) == (RAY_VERSION, DEFAULT_RAY_TTL_S)
