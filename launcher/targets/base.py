"""One interface for every place a job runs: this machine or a Kubernetes cluster.

The names, once: a **spec** (the YAML, `launcher.spec.JobSpec`) is planned into a **layout**
(`training.config.BatchLayout`); a target turns both into a **request**, which is exactly what
`dlaunch submit --dry-run` prints and exactly what `launch` sends or runs (torchx's
`dryrun()`/`schedule()` pair, torchx/runner/api.py); launching it gives a **handle**. Status,
logs, wait, cancel and list answer for a handle or a job name alike on every target, as
kubeflow/sdk's trainer backends do (kubeflow/trainer/backends/base.py).

Targets return data and iterators and never print: the CLI (`launcher/cli/`) does. They are
loaded lazily by name (`load_target`), so importing this module imports neither the
`kubernetes` client nor torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from training.contract import CONFIG_ERROR, POST_TRAINING_FAILED, PREEMPTED

if TYPE_CHECKING:
    import threading

    from launcher.spec import JobSpec
    from training.config import BatchLayout

# Target name -> "module:class". Imported only when a command needs that target.
TARGETS: dict[str, str] = {
    "local": "launcher.targets.local:LocalTarget",
    "kubernetes": "launcher.targets.kubernetes.target:KubernetesTarget",
}
DEFAULT_RUNS_DIR = "runs"
DEFAULT_GRACE_S = 30

# What a job's (or one agent's) exit code means, on every target (training/exitcodes.py).
POST_TRAINING_MESSAGE = ("training finished; post-training export/upload failed (see logs); resubmitting reruns only "
                         "that step")
EXIT_CODE_MEANINGS: dict[int, str] = {
    CONFIG_ERROR: "configuration error (see dlaunch logs)",
    PREEMPTED: "stopped after checkpointing (preempted or cancelled); resubmitting resumes",
    POST_TRAINING_FAILED: POST_TRAINING_MESSAGE,
}


def exit_code_meaning(code: int | None) -> str:
    """`exit code 80: training finished; ...`, or '' for success and codes with no special meaning."""
    return f"exit code {code}: {EXIT_CODE_MEANINGS[code]}" if code in EXIT_CODE_MEANINGS else ""


@dataclass(frozen=True)
class Where:
    """Where jobs are looked for: the local runs directory, and the cluster (context, namespace)."""

    runs_dir: str = DEFAULT_RUNS_DIR
    context: str | None = None
    namespace: str | None = None


@dataclass(frozen=True)
class SubmitOptions:
    """How to submit. `wait`/`follow`: the caller will wait for the end (streaming the main log),
    so a cluster must let it watch (and read logs). `replace`: Kubernetes, replace a live job whose
    spec changed. `grace_s`: local, how long workers get to checkpoint after SIGTERM before they
    are killed (on Kubernetes the pods' `kubernetes.termination_grace` rules). `max_restarts`:
    local, how often a Ray job's failed worker group is restarted (on Kubernetes
    `kubernetes.max_restarts` rules); local DeepSpeed agents never restart, a resubmit resumes."""

    wait: bool = False
    follow: bool = False
    replace: bool = False
    grace_s: int = DEFAULT_GRACE_S
    max_restarts: int = 0


class Request(Protocol):
    """Everything launch will send or run, fixed before anything starts."""

    name: str

    def text(self) -> str:
        """Exactly what `--dry-run` prints."""


@dataclass(frozen=True)
class Handle:
    """A launched (or found) job: which target, its name, where it lives, and what launch reported."""

    target: str
    name: str
    where: str
    messages: tuple[str, ...] = ()
    detail: Any = None


@dataclass(frozen=True)
class Outcome:
    """How a job ended: its phase, the exit code that ended it (local), and why."""

    phase: str
    code: int | None = None
    reason: str = ""

    @property
    def succeeded(self) -> bool:
        return self.phase == "Succeeded"


class Status(Protocol):
    """A job's status: printable as text and as JSON."""

    def text(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class JobRow:
    """One line of `dlaunch list`."""

    name: str
    target: str
    backend: str
    phase: str
    where: str
    age: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Cancelled:
    """What `cancel` did, as lines for the user."""

    messages: list[str]


class Target(Protocol):
    """A place jobs run. Implementations: `local.LocalTarget`, `kubernetes.target.KubernetesTarget`."""

    name: str

    def prepare(self, spec: "JobSpec", layout: "BatchLayout", options: SubmitOptions) -> Request: ...

    def launch(self, request: Request) -> Handle: ...

    def find(self, name: str, spec: "JobSpec | None" = None) -> Handle: ...

    def status(self, handle: Handle) -> Status: ...

    def logs(self, handle: Handle, *, rank: int | None = None, every: bool = False, follow: bool = False,
             stop: "threading.Event | None" = None) -> Iterator[str]: ...

    def wait(self, handle: Handle, on_change: Callable[[str], None] | None = None) -> Outcome: ...

    def cancel(self, handle: Handle, *, wait: bool = False) -> Cancelled: ...

    def list(self) -> list[JobRow]: ...


def load_target(name: str, where: Where) -> Target:
    """The target called `name`, importing its module now (not at start-up)."""
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}: one of {', '.join(TARGETS)}")
    module, _, cls = TARGETS[name].partition(":")
    target: Target = getattr(importlib.import_module(module), cls)(where)
    return target


def target_of_name(name: str, where: Where) -> str:
    """Which target a bare job name refers to: `local` when `runs/<name>/` holds a job, else `kubernetes`."""
    return "local" if (Path(where.runs_dir) / name / "job.json").is_file() else "kubernetes"
