"""Helpers for the Kubernetes manifest and Helm chart tests (imported by tests/test_render*.py
and tests/test_helm*.py): example specs, schemas, the restricted-profile check, Helm itself."""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from launcher.spec import JobSpec, load_spec
from launcher.targets.kubernetes.render import plan_for_render, render

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden"
CHART = REPO / "helm" / "dlaunch"
SCHEMAS = Path(__file__).resolve().parent / "schemas"  # vendored upstream CRDs, see schemas/README.md
INSTALL_HELM = REPO / "scripts" / "install_helm.sh"
# Set DLAUNCH_UPDATE_GOLDEN=1 to rewrite golden files (and the chart's default job) after an
# intended change; review the diff before committing.
UPDATE_GOLDEN = os.environ.get("DLAUNCH_UPDATE_GOLDEN") == "1"
K8S_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())


def example_target(path: Path) -> str:
    return yaml.safe_load(path.read_text()).get("target", "local")


KUBERNETES_EXAMPLES = sorted(p for p in EXAMPLES.glob("*.yaml") if example_target(p) == "kubernetes")
LOCAL_EXAMPLES = sorted(p for p in EXAMPLES.glob("*.yaml") if example_target(p) != "kubernetes")


def load_example(path: Path) -> JobSpec:
    return load_spec(path).spec


def render_objects(spec: JobSpec) -> list[dict[str, Any]]:
    return render(spec, plan_for_render(spec))


def small_spec_data(backend: str = "deepspeed") -> dict[str, Any]:
    """A small valid Kubernetes spec as plain data, for tests to change one thing at a time."""
    return {
        "name": "unit-k8s",
        "backend": backend,
        "target": "kubernetes",
        "image": "registry.example.com/ml/dlaunch:test",
        "resources": {"nodes": 2, "gpus_per_node": 8, "cpu": 32, "memory": "256Gi", "shm": "16Gi"},
        "kubernetes": {"namespace": "unit", "secrets": {"s3": "s3-credentials", "wandb": "wandb-api-key"}},
        "training": {
            "model": {"type": "causal-lm", "preset": "llama-tiny"},
            "data": {"train": "s3://unit-bucket/train/", "seq_len": 128},
            "batch": {"global": 64, "micro": 2},
            "max_steps": 10,
            "zero": {"stage": 2},
        },
    }


def spec_of(data: dict[str, Any]) -> JobSpec:
    return JobSpec.model_validate(copy.deepcopy(data))


def object_key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def pod_templates(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pod templates inside a workload object, by role."""
    if obj["kind"] == "Job":
        return {"node": obj["spec"]["template"]}
    if obj["kind"] == "RayJob":
        cluster = obj["spec"]["rayClusterSpec"]
        found = {"submitter": obj["spec"]["submitterPodTemplate"], "head": cluster["headGroupSpec"]["template"]}
        for group in cluster["workerGroupSpecs"]:
            found[group["groupName"]] = group["template"]
        return found
    return {}


def all_pod_templates(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {role: t for obj in objects for role, t in pod_templates(obj).items()}


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def _close(node: Any) -> Any:
    """A CRD schema where objects with listed properties reject others, as a typo check.

    The API server prunes unknown fields of a CRD silently; tests want them reported.
    """
    if isinstance(node, list):
        return [_close(item) for item in node]
    if not isinstance(node, dict):
        return node
    closed = {key: _close(value) for key, value in node.items()}
    if ("properties" in closed and "additionalProperties" not in closed
            and not closed.get("x-kubernetes-preserve-unknown-fields")):
        closed["additionalProperties"] = False
    return closed


@functools.cache
def rayjob_schema() -> dict[str, Any]:
    """The KubeRay RayJob `v1` schema (upstream CRD, unmodified file), closed to unknown fields."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the CRD is 1.4 MB
    crd = yaml.load((SCHEMAS / "ray.io_rayjobs.yaml").read_text(), Loader=loader)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return _close(version["schema"]["openAPIV3Schema"])


def validate_object(obj: dict[str, Any], version: str = K8S_VERSIONS[-1]) -> None:
    """Raise unless `obj` is valid: RayJobs against the KubeRay CRD, the rest against Kubernetes."""
    if obj["apiVersion"] == "ray.io/v1":
        rayjob_validator().validate(obj)
    else:
        kubernetes_validate.validate(obj, version, strict=True)


@functools.cache
def rayjob_validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(rayjob_schema())


ALLOWED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                        "projected", "secret"}


def _container_violations(pod_spec: dict[str, Any], container: dict[str, Any]) -> list[str]:
    name, ctx, pod_ctx = container["name"], container.get("securityContext", {}), pod_spec.get("securityContext", {})
    found = []
    if ctx.get("privileged"):
        found.append(f"{name}: privileged")
    if ctx.get("allowPrivilegeEscalation") is not False:
        found.append(f"{name}: allowPrivilegeEscalation is not false")
    caps = ctx.get("capabilities", {})
    if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
        found.append(f"{name}: capabilities are not dropped")
    if not ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")):
        found.append(f"{name}: runAsNonRoot is not true")
    if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
        found.append(f"{name}: runs as uid 0")
    seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {})).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        found.append(f"{name}: seccompProfile is {seccomp!r}")
    if any("hostPort" in port for port in container.get("ports", [])):
        found.append(f"{name}: uses a hostPort")
    return found


def restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    """Where a pod spec breaks the restricted Pod Security Standard (empty when it complies)."""
    found = [f"pod: {key}" for key in ("hostNetwork", "hostPID", "hostIPC") if pod_spec.get(key)]
    for volume in pod_spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUME_TYPES:
            found.append(f"volume {volume['name']}: {sorted(kinds)}")
    for container in pod_spec.get("initContainers", []) + pod_spec["containers"]:
        found += _container_violations(pod_spec, container)
    return found


def _is_helm_v4(path: str) -> bool:
    out = subprocess.run([path, "version", "--short"], capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.startswith("v4.")


@functools.cache
def helm_binary() -> str:
    """Helm v4: from PATH, from .tools/bin, or installed there by scripts/install_helm.sh."""
    for candidate in (shutil.which("helm"), str(REPO / ".tools" / "bin" / "helm")):
        if candidate and os.access(candidate, os.X_OK) and _is_helm_v4(candidate):
            return candidate
    out = subprocess.run(["bash", str(INSTALL_HELM)], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"scripts/install_helm.sh failed:\n{out.stderr}")
    return out.stdout.strip().splitlines()[-1]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=300)
