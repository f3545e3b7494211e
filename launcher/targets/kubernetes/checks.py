"""What a spec needs before it can become Kubernetes objects.

`launcher/spec.py` already refuses env *names* that look like secrets; this also refuses env
*values* that look like credentials, so that no secret can reach rendered output, and asks for
the settings pods cannot do without: resources, checkpoint storage every pod shares, and names
that every object derived from the job's name accepts. `launcher.spec.spec_problems` runs these
for every Kubernetes spec, so `validate` reports them with the others, all at once.
"""

from __future__ import annotations

import re

from launcher.errors import SpecError, SpecProblem
from launcher.quantity import parse_quantity
from launcher.spec import DNS_1035_LABEL, DNS_LABEL, DNS_SUBDOMAIN, JobSpec, spec_problems
from launcher.targets.kubernetes.pods import JOB_LABEL, NAME_LABEL, QUEUE_LABEL, config_map_name, namespace_of

SECRETS_HINT = ("never put secret values in the spec: create a Kubernetes Secret and name it under "
                "kubernetes.secrets (s3, wandb), or use a service account with a cloud IAM role")

# What common credentials look like. The value itself is never repeated in the error.
SECRET_VALUE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("an AWS access key id", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("a GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b")),
    ("a Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")),
    ("a Slack token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
    ("a JSON web token", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.")),
    ("a password inside a URL", re.compile(r"://[^/\s:@]+:[^/\s@]+@")),
)

# Set by dlaunch (or the Job controller) in every pod; the spec may not override them.
RESERVED_ENV = frozenset({
    "DLAUNCH_JOB", "DLAUNCH_JOB_FILE", "DLAUNCH_RDZV_HOST", "DLAUNCH_RDZV_PORT", "DLAUNCH_RDZV_WAIT_TIMEOUT",
    "HOME", "JOB_COMPLETION_INDEX", "TORCH_ELASTIC_SHUTDOWN_TIMEOUT",
})
RESERVED_LABEL_PREFIXES = (JOB_LABEL.split("/")[0] + "/", QUEUE_LABEL.split("/")[0] + "/")


def is_reserved_label(key: str) -> bool:
    return key == NAME_LABEL or key.startswith(RESERVED_LABEL_PREFIXES)


def secret_value_problems(spec: JobSpec) -> list[SpecProblem]:
    """Env values that look like credentials."""
    problems = []
    for key in sorted(spec.kubernetes.env):
        for what, pattern in SECRET_VALUE_PATTERNS:
            if pattern.search(spec.kubernetes.env[key]):
                problems.append(SpecProblem(path=f"kubernetes.env.{key}", message=f"the value looks like {what}",
                                            hint=SECRETS_HINT))
                break
    return problems


def reserved_name_problems(spec: JobSpec) -> list[SpecProblem]:
    """Env names and label keys that dlaunch sets itself."""
    problems = [
        SpecProblem(path=f"kubernetes.env.{key}", message="is set by dlaunch in every pod",
                    hint="choose another name")
        for key in sorted(spec.kubernetes.env) if key in RESERVED_ENV
    ]
    problems += [
        SpecProblem(path=f"kubernetes.labels.{key}", message="is a label dlaunch sets itself",
                    hint="use kubernetes.queue for Kueue; choose another key otherwise")
        for key in sorted(spec.kubernetes.labels) if is_reserved_label(key)
    ]
    return problems


def resource_problems(spec: JobSpec) -> list[SpecProblem]:
    """Pods need an image, CPU and memory (requests = limits); /dev/shm counts against memory."""
    res, problems = spec.resources, []
    if spec.image is None:
        problems.append(SpecProblem(path="image", message="required to render Kubernetes objects",
                                    hint="add `image: registry/repository:tag` (the worker image every pod runs)"))
    for key in ("cpu", "memory"):
        if getattr(res, key) is None:
            problems.append(SpecProblem(path=f"resources.{key}", message="required to render Kubernetes objects",
                                        hint="pods get requests equal to limits; e.g. cpu: 16, memory: 64Gi"))
    if res.memory is not None and parse_quantity(res.shm) >= parse_quantity(res.memory):
        problems.append(SpecProblem(path="resources.shm", message=f"must be smaller than resources.memory "
                                    f"({res.memory}): /dev/shm is memory-backed and counts against it",
                                    value=repr(res.shm)))
    return problems


def checkpoint_problems(spec: JobSpec) -> list[SpecProblem]:
    """A multi-node job needs checkpoint storage that every pod sees.

    Rank 0 commits a checkpoint only once every rank's upload marker is under the step prefix
    (training/checkpoint/commit.py); with a local path each pod writes to its own scratch
    volume, so rank 0 never sees the others' markers and no checkpoint is ever committed.
    """
    uri, nodes = spec.training.checkpoint.uri, spec.resources.nodes
    if nodes == 1 or uri.startswith("s3://"):
        return []
    return [SpecProblem(path="training.checkpoint.uri", value=repr(uri),
                        message=f"a {nodes}-node job on Kubernetes needs checkpoint storage all pods share; "
                                "a local path is a separate directory in each pod",
                        hint="use s3://<bucket>/<prefix>, with kubernetes.secrets.s3 naming the credentials "
                             "Secret (and training.checkpoint.endpoint_url for an S3-compatible store)")]


# Kubernetes name rules (kubernetes/kubernetes staging/src/k8s.io/apimachinery/pkg/util/validation).
RULES: dict[str, re.Pattern[str]] = {
    "DNS-1035 label": DNS_1035_LABEL,  # IsDNS1035Label: Service names
    "DNS-1123 label": DNS_LABEL,  # IsDNS1123Label: pod hostnames, label values
    "DNS-1123 subdomain": DNS_SUBDOMAIN,  # IsDNS1123Subdomain: ConfigMap names, host names
}
# KubeRay ray-operator/controllers/ray/utils/constant.go: MaxRayClusterNameLength (63 minus
# "-serve-svc") and MaxRayJobNameLength (that minus the 6 characters GenerateRayClusterName appends).
MAX_RAY_CLUSTER_NAME = 53
MAX_RAY_JOB_NAME = MAX_RAY_CLUSTER_NAME - 6
RAY_CLUSTER_PLACEHOLDER = "-xxxxx"  # util.go GenerateRayClusterName: "<rayjob>-" + 5 random characters


def derived_names(spec: JobSpec) -> list[tuple[str, str, str, int]]:
    """(what, name, rule, maximum length) of every name Kubernetes or KubeRay derives from the job's name."""
    name, last_index = spec.name, spec.resources.nodes - 1
    names = [("ConfigMap", config_map_name(spec), "DNS-1123 subdomain", 253)]
    if spec.backend == "ray":
        cluster = name + RAY_CLUSTER_PLACEHOLDER
        return names + [
            ("RayJob (KubeRay ValidateRayJobMetadata)", name, "DNS-1035 label", MAX_RAY_JOB_NAME),
            ("RayCluster (KubeRay ValidateRayClusterMetadata)", cluster, "DNS-1035 label", MAX_RAY_CLUSTER_NAME),
            ("Ray head Service (KubeRay GenerateHeadServiceName)", f"{cluster}-head-svc", "DNS-1035 label", 63),
        ]
    return names + [
        ("Service (ValidateServiceName)", name, "DNS-1035 label", 63),
        ("Job (its name is the pods' batch.kubernetes.io/job-name label)", name, "DNS-1123 label", 63),
        # Job controller manageJob: Spec.Hostname = "<job>-<index>" (pod names are truncated by
        # podGenerateNameWithIndex, hostnames are not).
        (f"hostname of pod {last_index}", f"{name}-{last_index}", "DNS-1123 label", 63),
        ("rendezvous host", f"{name}-0.{name}.{namespace_of(spec)}.svc", "DNS-1123 subdomain", 253),
    ]


def derived_name_problems(spec: JobSpec) -> list[SpecProblem]:
    """Names derived from `name` that the API server or KubeRay would refuse (too long or malformed)."""
    problems = []
    for what, derived, rule, limit in derived_names(spec):
        if len(derived) > limit or not RULES[rule].match(derived):
            problems.append(SpecProblem(path="name", value=repr(spec.name),
                                        message=f"gives the {what} name '{derived}', which must be a {rule} of "
                                                f"at most {limit} characters", hint="choose a shorter name"))
    return problems


def object_problems(spec: JobSpec) -> list[SpecProblem]:
    """What keeps `spec` from becoming objects the API server and KubeRay accept, or that leak secrets."""
    return (resource_problems(spec) + derived_name_problems(spec) + reserved_name_problems(spec)
            + secret_value_problems(spec))


def kubernetes_problems(spec: JobSpec) -> list[SpecProblem]:
    """Everything that keeps `spec` from running on Kubernetes: its objects, and shared checkpoint storage."""
    return object_problems(spec) + checkpoint_problems(spec)


def check_renderable(spec: JobSpec) -> None:
    """Raise `SpecError` listing every reason `spec` cannot become valid objects.

    The checks `validate` runs (`launcher.spec.spec_problems`) except `checkpoint_problems`: a
    job whose checkpoints are local to each pod still renders (for a spec built in code), but
    every command that loads a spec file (`validate`, `render`, `submit`) refuses it.
    """
    problems = spec_problems(spec, kubernetes=False) + object_problems(spec)
    if problems:
        raise SpecError(problems)
