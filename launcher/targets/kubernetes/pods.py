"""Pieces every dlaunch pod shares, whichever backend: labels, env, resources, volumes, security.

Pure functions of the spec that return plain dicts; `render.py` assembles them into objects.
"""

from __future__ import annotations

from typing import Any

from launcher.spec import JobSpec, SecretRefs

# Label and annotation keys dlaunch puts on what it renders.
JOB_LABEL = "dlaunch.dev/job"
NAME_LABEL = "app.kubernetes.io/name"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
SPEC_HASH_ANNOTATION = "dlaunch.dev/spec-hash"
# Set by the Job controller on each pod of an Indexed Job: the pod's node rank.
COMPLETION_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
GPU_RESOURCE = "nvidia.com/gpu"

DEFAULT_NAMESPACE = "default"
CONFIG_DIR = "/etc/dlaunch"
JOB_FILE = f"{CONFIG_DIR}/job.json"
SCRATCH_DIR = "/scratch"
RUN_DIR = f"{SCRATCH_DIR}/run"
# Pods run as this non-root user and group (the restricted Pod Security profile).
RUN_AS_USER = 1000

# Environment variables each Secret provides: (variable, key in the Secret, optional).
S3_SECRET_KEYS = (("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID", False),
                  ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", False),
                  ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL", True))
WANDB_SECRET_KEYS = (("WANDB_API_KEY", "WANDB_API_KEY", False),)


def namespace_of(spec: JobSpec) -> str:
    """Where the job's objects live: the spec's namespace, else `default`."""
    return spec.kubernetes.namespace or DEFAULT_NAMESPACE


def config_map_name(spec: JobSpec) -> str:
    return f"{spec.name}-config"


def job_labels(spec: JobSpec) -> dict[str, str]:
    """Labels on every object and pod: the user's, then dlaunch's own (which `dlaunch status` selects on)."""
    labels = {**spec.kubernetes.labels, JOB_LABEL: spec.name, NAME_LABEL: "dlaunch"}
    return dict(sorted(labels.items()))


def object_meta(spec: JobSpec, name: str, annotations: dict[str, str] | None = None,
                extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """`metadata` of a top-level object in the job's namespace."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace_of(spec),
        "labels": dict(sorted({**job_labels(spec), **(extra_labels or {})}.items())),
    }
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))
    return meta


def format_cpu(value: float | str) -> str:
    """A CPU quantity as a string: 96 -> '96', 0.5 -> '0.5', '500m' -> '500m'."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def render_resources(cpu: float | str | None, memory: str | None, gpus: int) -> dict[str, Any]:
    """Requests equal to limits (Guaranteed QoS: training pods are not evicted first under pressure)."""
    amounts: dict[str, str] = {}
    if cpu is not None:
        amounts["cpu"] = format_cpu(cpu)
    if memory is not None:
        amounts["memory"] = memory
    if gpus:
        amounts[GPU_RESOURCE] = str(gpus)
    return {"limits": dict(amounts), "requests": dict(amounts)}


def secret_env(secrets: SecretRefs, plain_env: dict[str, str]) -> list[dict[str, Any]]:
    """Credentials as `secretKeyRef`s to the named Secrets; a plain env value of the same name wins."""
    entries = []
    for secret_name, keys in ((secrets.s3, S3_SECRET_KEYS), (secrets.wandb, WANDB_SECRET_KEYS)):
        if secret_name is None:
            continue
        for variable, key, optional in keys:
            if variable in plain_env:
                continue
            ref: dict[str, Any] = {"name": secret_name, "key": key}
            if optional:
                ref["optional"] = True
            entries.append({"name": variable, "valueFrom": {"secretKeyRef": ref}})
    return entries


def base_env(spec: JobSpec) -> list[dict[str, Any]]:
    """What dlaunch sets in every container, before the spec's own variables."""
    return [
        {"name": "DLAUNCH_JOB", "value": spec.name},
        {"name": "DLAUNCH_JOB_FILE", "value": JOB_FILE},
        {"name": "HOME", "value": SCRATCH_DIR},
    ]


def render_env(spec: JobSpec, backend_env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """dlaunch's variables, the backend's, the spec's (sorted by name), then the Secret references."""
    plain = [{"name": key, "value": spec.kubernetes.env[key]} for key in sorted(spec.kubernetes.env)]
    return base_env(spec) + backend_env + plain + secret_env(spec.kubernetes.secrets, spec.kubernetes.env)


def render_volumes(spec: JobSpec, shm: str) -> list[dict[str, Any]]:
    """The job's ConfigMap, a memory-backed /dev/shm of the given size, and writable scratch space."""
    return [
        {"name": "job-config", "configMap": {"name": config_map_name(spec)}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}},
        {"name": "scratch", "emptyDir": {}},
    ]


def render_volume_mounts() -> list[dict[str, Any]]:
    return [
        {"name": "job-config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "scratch", "mountPath": SCRATCH_DIR},
    ]


def container_security_context() -> dict[str, Any]:
    """The restricted Pod Security profile, container part."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def pod_security_context() -> dict[str, Any]:
    """The restricted Pod Security profile, pod part: non-root with the runtime's seccomp filter."""
    return {
        "fsGroup": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def render_container(name: str, spec: JobSpec, resources: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A container of the job's image under the restricted profile, plus `fields` (env, mounts, ...)."""
    return {
        "name": name,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        **fields,
        "resources": resources,
        "securityContext": container_security_context(),
    }


def render_scheduling(spec: JobSpec) -> dict[str, Any]:
    """Where and with what priority and identity pods run: the optional pod-spec fields of the spec."""
    k8s = spec.kubernetes
    fields: dict[str, Any] = {}
    if k8s.host_network:
        fields["hostNetwork"] = True
        fields["dnsPolicy"] = "ClusterFirstWithHostNet"
    if k8s.image_pull_secrets:
        fields["imagePullSecrets"] = [{"name": name} for name in k8s.image_pull_secrets]
    if k8s.node_selector:
        fields["nodeSelector"] = dict(sorted(k8s.node_selector.items()))
    if k8s.priority_class:
        fields["priorityClassName"] = k8s.priority_class
    if k8s.service_account:
        fields["serviceAccountName"] = k8s.service_account
    if k8s.tolerations:
        fields["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in k8s.tolerations]
    return fields


def render_pod_spec(spec: JobSpec, containers: list[dict[str, Any]], volumes: list[dict[str, Any]] | None = None,
                    **fields: Any) -> dict[str, Any]:
    """A pod spec with dlaunch's security settings, scheduling and grace period, plus `fields`."""
    pod_spec = {
        **fields,
        "automountServiceAccountToken": False,
        **render_scheduling(spec),
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": spec.kubernetes.termination_grace,
        "containers": containers,
    }
    if volumes:
        pod_spec["volumes"] = volumes
    return pod_spec


def render_job_container(name: str, spec: JobSpec, backend_env: list[dict[str, Any]], resources: dict[str, Any],
                         **fields: Any) -> dict[str, Any]:
    """A container that runs the job's code: its environment, credentials and the job's mounts."""
    return render_container(name, spec, resources, **fields, env=render_env(spec, backend_env),
                            volumeMounts=render_volume_mounts())


def render_pod_template(spec: JobSpec, pod_spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"labels": job_labels(spec)}, "spec": pod_spec}
