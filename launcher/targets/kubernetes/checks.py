"""What a valid spec still needs before it can become Kubernetes objects.

`launcher/spec.py` already refuses env *names* that look like secrets; this also refuses env
*values* that look like credentials, so that no secret can reach rendered output, and asks for
the settings pods cannot do without. Every problem is reported at once, as a `SpecError`.
"""

from __future__ import annotations

import re

from launcher.errors import SpecError, SpecProblem
from launcher.quantity import parse_quantity
from launcher.spec import JobSpec
from launcher.targets.kubernetes.pods import JOB_LABEL, NAME_LABEL, QUEUE_LABEL

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


def check_renderable(spec: JobSpec) -> None:
    """Raise `SpecError` listing every reason `spec` cannot be rendered safely."""
    problems = resource_problems(spec) + reserved_name_problems(spec) + secret_value_problems(spec)
    if problems:
        raise SpecError(problems)
