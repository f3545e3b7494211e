"""Pieces every dlaunch pod shares, whichever backend: labels, env, resources, volumes, security.

Pure functions of the spec that return plain dicts; `render.py` assembles them into objects.
"""

from __future__ import annotations

from dataclasses import dataclass
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
TMP_DIR = "/tmp"
SECRETS_DIR = f"{CONFIG_DIR}/secrets"
# Pods run as this non-root user and group (the restricted Pod Security profile), at or above
# 10000 so that it never collides with a user of the node (the Dockerfile creates it).
RUN_AS_USER = 10001
# Secret files are readable by the pod's group (fsGroup) and nobody else: 0440.
SECRET_FILE_MODE = 0o440


@dataclass(frozen=True)
class SecretMount:
    """A Secret mounted as files, and the variables that point its client at them.

    Credentials reach pods as files, never as environment variables (which leak into child
    processes, crash reports and `kubectl describe`): boto3 reads AWS_SHARED_CREDENTIALS_FILE
    (INI, `[default]` with `aws_access_key_id` / `aws_secret_access_key`) and AWS_CONFIG_FILE
    (optional, e.g. `endpoint_url`; a missing file is ignored), W&B reads the netrc file NETRC
    names (wandb/sdk/lib/wbauth/wbnetrc.py `_get_netrc_file_path`).
    """

    field: str  # under `kubernetes.secrets`
    volume: str
    files: tuple[tuple[str, str, bool], ...]  # (variable, key in the Secret, required)

    @property
    def mount_path(self) -> str:
        return f"{SECRETS_DIR}/{self.field}"


SECRET_MOUNTS = (
    SecretMount("s3", "s3-credentials", (("AWS_SHARED_CREDENTIALS_FILE", "credentials", True),
                                         ("AWS_CONFIG_FILE", "config", False))),
    SecretMount("wandb", "wandb-credentials", (("NETRC", "netrc", True),)),
)


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


def secret_mounts(secrets: SecretRefs) -> list[tuple[SecretMount, str]]:
    """The mounts of the Secrets the spec names, with each Secret's name."""
    return [(mount, getattr(secrets, mount.field)) for mount in SECRET_MOUNTS
            if getattr(secrets, mount.field) is not None]


def secret_env(secrets: SecretRefs, plain_env: dict[str, str]) -> list[dict[str, Any]]:
    """Variables naming the mounted credential files; a plain env value of the same name wins."""
    return [{"name": variable, "value": f"{mount.mount_path}/{key}"}
            for mount, _ in secret_mounts(secrets) for variable, key, _ in mount.files
            if variable not in plain_env]


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
    """The job's ConfigMap, a memory-backed /dev/shm of the given size, writable scratch space and
    /tmp (the root filesystem is read-only), and the credential Secrets as files."""
    volumes: list[dict[str, Any]] = [
        {"name": "job-config", "configMap": {"name": config_map_name(spec)}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    # Every key of the Secret becomes a file; pre-flight checks that the required keys exist.
    volumes += [{"name": mount.volume, "secret": {"secretName": secret_name, "defaultMode": SECRET_FILE_MODE}}
                for mount, secret_name in secret_mounts(spec.kubernetes.secrets)]
    return volumes


def render_volume_mounts(spec: JobSpec) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"name": "job-config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "scratch", "mountPath": SCRATCH_DIR},
        {"name": "tmp", "mountPath": TMP_DIR},
    ]
    mounts += [{"name": mount.volume, "mountPath": mount.mount_path, "readOnly": True}
               for mount, _ in secret_mounts(spec.kubernetes.secrets)]
    return mounts


def container_security_context() -> dict[str, Any]:
    """The restricted Pod Security profile, container part, and a read-only root filesystem: a
    container writes only to its emptyDirs (/tmp, /scratch, /dev/shm)."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True}


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
                            volumeMounts=render_volume_mounts(spec))


def render_pod_template(spec: JobSpec, pod_spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"labels": job_labels(spec)}, "spec": pod_spec}
