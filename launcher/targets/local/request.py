"""What a local job runs: the resolved job file and one command per process, fixed before launch.

DeepSpeed: `nodes` torchrun agents (`python -m training.agent`) meeting through c10d rendezvous on
loopback, exactly as pods would; each starts `procs_per_node` workers running
`python -m training.run <run_dir>/job.json`. Ray: one driver (`python -m training.ray_entry`)
that starts a local Ray instance and the Ray Train workers. `LocalRequest.text()` is what
`dlaunch submit --dry-run` prints; the supervisor runs exactly `request.json`, the same object.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from launcher.resolve import job_json, resolve_job
from launcher.spec import JobSpec
from launcher.targets.base import SubmitOptions
from launcher.targets.local.paths import RunPaths
from training.contract import BatchLayout

RENDEZVOUS_TIMEOUT_S = 120


@dataclass(frozen=True)
class Process:
    """One process the supervisor starts, in its own process group, output appended to `logs/<log>`."""

    name: str
    argv: list[str]
    log: str


@dataclass(frozen=True)
class LocalRequest:
    """Everything a local launch writes and runs."""

    name: str
    backend: str
    run_dir: str
    job_json: str
    processes: list[Process]
    env: dict[str, str]
    grace_s: int
    max_steps: int

    @property
    def paths(self) -> RunPaths:
        return RunPaths(Path(self.run_dir))

    def text(self) -> str:
        """`job.json`, the environment added to the caller's, and each process's command."""
        env = " ".join(f"{key}={shlex.quote(value)}" for key, value in sorted(self.env.items()))
        lines = [f"# {self.paths.job_file}", self.job_json.rstrip(), "",
                 f"# environment added to yours: {env}",
                 f"# processes (each its own process group; SIGTERM, then SIGKILL after {self.grace_s} s)"]
        for process in self.processes:
            lines += [f"# {process.name} -> {self.paths.log_dir / process.log}", shlex.join(process.argv)]
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "LocalRequest":
        data = json.loads(text)
        return cls(**{**data, "processes": [Process(**p) for p in data["processes"]]})


def _absolute(path: str | None) -> str | None:
    """Local paths are relative to where dlaunch runs; workers get them absolute."""
    if path is None or "://" in path:
        return path
    return os.path.abspath(path)


def localize(spec: JobSpec) -> JobSpec:
    """A copy of `spec` with every local path made absolute."""
    t = spec.training
    data = t.data.model_copy(update={key: _absolute(getattr(t.data, key))
                                     for key in ("train", "validation", "prepared", "cache_dir")})
    checkpoint = t.checkpoint.model_copy(update={"uri": _absolute(t.checkpoint.uri)})
    training = t.model_copy(update={"data": data, "checkpoint": checkpoint})
    return spec.model_copy(update={"training": training})


def agent_argv(spec: JobSpec, job_file: str, node: int, port: int) -> list[str]:
    """The torchrun command line for node `node` (node 0 hosts the rendezvous store)."""
    resources = spec.resources
    return [
        sys.executable, "-m", "training.agent",  # torchrun that passes worker exit codes through
        f"--nnodes={resources.nodes}",
        f"--nproc-per-node={resources.procs_per_node}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        f"--rdzv-id={spec.name}",
        f"--rdzv-conf=is_host={1 if node == 0 else 0},join_timeout={RENDEZVOUS_TIMEOUT_S}",
        "--max-restarts=0",
        "-m", "training.run", job_file,
    ]


def processes(spec: JobSpec, paths: RunPaths) -> list[Process]:
    """DeepSpeed: one torchrun agent per node, on a loopback port free now. Ray: one driver."""
    job_file = str(paths.job_file)
    if spec.backend == "ray":
        return [Process("driver", [sys.executable, "-m", "training.ray_entry", job_file], "driver.log")]
    from training.distributed import free_port  # the worker's helper; a socket call, nothing heavy

    port = free_port()
    return [Process(f"agent-{node}", agent_argv(spec, job_file, node, port), f"agent-{node}.log")
            for node in range(spec.resources.nodes)]


def worker_env(spec: JobSpec, paths: RunPaths) -> dict[str, str]:
    """Added to the caller's environment: one share of this machine's cores per worker (unless
    OMP_NUM_THREADS is set), where rank logs go, unbuffered output, a quiet W&B."""
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // spec.world_size))
    return {"OMP_NUM_THREADS": threads, "DLAUNCH_LOG_DIR": str(paths.log_dir), "PYTHONUNBUFFERED": "1",
            "WANDB_SILENT": "true"}


def prepare(spec: JobSpec, layout: BatchLayout, runs_dir: str, options: SubmitOptions) -> LocalRequest:
    """The request for `spec` under `runs_dir/<name>/`. Writes nothing: `launch` does."""
    spec = localize(spec)
    paths = RunPaths.of(runs_dir, spec.name)
    return LocalRequest(
        name=spec.name, backend=spec.backend, run_dir=str(paths.run_dir),
        job_json=job_json(resolve_job(spec, layout, str(paths.run_dir), options.max_restarts)),
        processes=processes(spec, paths), env=worker_env(spec, paths), grace_s=options.grace_s,
        max_steps=spec.training.max_steps,
    )
