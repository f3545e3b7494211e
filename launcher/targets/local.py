"""Run a job on this machine: `nodes` torchrun agents meeting through c10d rendezvous on loopback.

Each agent plays one node, exactly as a pod would, and starts `procs_per_node` workers
running `python -m training.run <run_dir>/job.json`. With `backend: ray`, one driver
(`python -m training.ray_entry`) starts a local Ray instance and `nodes x procs_per_node`
Ray Train workers instead. Worker output goes to
`runs/<name>/logs/rank-<r>.log`, agent output to `agent-<n>.log`; rank 0 appends metrics
to `runs/<name>/metrics.jsonl`, which the progress display follows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from launcher.errors import SubmitError
from launcher.resolve import job_json, resolve_job
from launcher.spec import JobSpec
from training.config import BatchLayout
from training.distributed import free_port

RUNS_DIR = "runs"
RENDEZVOUS_TIMEOUT_S = 120


@dataclass
class LocalRun:
    """The files of one local job and the agent processes running it."""

    spec: JobSpec
    run_dir: Path
    job_file: Path
    agents: list[subprocess.Popen[bytes]] = field(default_factory=list)
    agent_logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def metrics_file(self) -> Path:
        return self.run_dir / "metrics.jsonl"


def _absolute(path: str | None) -> str | None:
    """Local paths are relative to where dlaunch runs; workers get them absolute."""
    if path is None or "://" in path:
        return path
    return os.path.abspath(path)


def localize(spec: JobSpec) -> JobSpec:
    """A copy of `spec` with every local path made absolute."""
    t = spec.training
    data = t.data.model_copy(update={"train": _absolute(t.data.train), "validation": _absolute(t.data.validation)})
    checkpoint = t.checkpoint.model_copy(update={"uri": _absolute(t.checkpoint.uri)})
    training = t.model_copy(update={"data": data, "checkpoint": checkpoint})
    return spec.model_copy(update={"training": training})


def dry_run_text(spec: JobSpec, layout: BatchLayout, runs_dir: str = RUNS_DIR) -> str:
    """What `prepare` + `start_agents` would write and run, without touching anything."""
    spec = localize(spec)
    run = LocalRun(spec=spec, run_dir=Path(runs_dir).resolve() / spec.name,
                   job_file=Path(runs_dir).resolve() / spec.name / "job.json")
    commands = [driver_command(run)] if spec.backend == "ray" else \
        [agent_command(run, node, port=0) for node in range(spec.resources.nodes)]
    lines = [f"# {run.job_file}", job_json(resolve_job(spec, layout, str(run.run_dir))).rstrip(), "",
             "# commands (port 0 = a free port chosen at start)"]
    return "\n".join(lines + [" ".join(c) for c in commands])


def prepare(spec: JobSpec, layout: BatchLayout, runs_dir: str = RUNS_DIR) -> LocalRun:
    """Write `runs/<name>/job.json`; existing logs, metrics and checkpoints are kept."""
    spec = localize(spec)
    run_dir = Path(runs_dir).resolve() / spec.name
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    job_file = run_dir / "job.json"
    tmp = job_file.with_suffix(".json.tmp")
    tmp.write_text(job_json(resolve_job(spec, layout, str(run_dir))), encoding="utf-8")
    tmp.replace(job_file)
    return LocalRun(spec=spec, run_dir=run_dir, job_file=job_file)


def agent_command(run: LocalRun, node: int, port: int) -> list[str]:
    """The torchrun command line for node `node` (node 0 hosts the rendezvous store)."""
    resources = run.spec.resources
    return [
        sys.executable, "-m", "training.agent",  # torchrun that passes worker exit codes through
        f"--nnodes={resources.nodes}",
        f"--nproc-per-node={resources.procs_per_node}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        f"--rdzv-id={run.spec.name}",
        f"--rdzv-conf=is_host={1 if node == 0 else 0},join_timeout={RENDEZVOUS_TIMEOUT_S}",
        "--max-restarts=0",
        "--monitor-interval=0.5",
        "-m", "training.run", str(run.job_file),
    ]


def worker_env(run: LocalRun) -> dict[str, str]:
    """Environment of every agent: one share of this machine's cores per worker."""
    procs = run.spec.world_size
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // procs)))
    env.update(DLAUNCH_LOG_DIR=str(run.log_dir), PYTHONUNBUFFERED="1", WANDB_SILENT="true")
    return env


def driver_command(run: LocalRun) -> list[str]:
    """The Ray backend's driver: a local Ray instance (or RAY_ADDRESS) running the TorchTrainer."""
    return [sys.executable, "-m", "training.ray_entry", str(run.job_file)]


def _spawn(run: LocalRun, command: list[str], log_name: str, env: dict[str, str]) -> None:
    log_file = (run.log_dir / log_name).open("ab")
    run.agent_logs.append(log_file)
    run.agents.append(subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True))


def start_agents(run: LocalRun) -> None:
    """DeepSpeed: one torchrun agent per node. Ray: one driver. Each in its own process group."""
    env = worker_env(run)
    if run.spec.backend == "ray":
        _spawn(run, driver_command(run), "driver.log", env)
        return
    port = free_port()
    for node in range(run.spec.resources.nodes):
        _spawn(run, agent_command(run, node, port), f"agent-{node}.log", env)


def stop_agents(run: LocalRun, grace_s: float) -> None:
    """SIGTERM every agent (workers checkpoint and exit), then SIGKILL what is left after `grace_s`."""
    for agent in run.agents:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for agent in run.agents:
        try:
            agent.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()
    for handle in run.agent_logs:
        handle.close()


def poll_agents(run: LocalRun, settle_s: float = 10.0) -> int | None:
    """None while all agents run; 0 when all succeeded; otherwise the job's exit code.

    When one agent fails, the others get `settle_s` to exit too, and the most telling code wins
    (a configuration error over a peer that only saw its rendezvous close), as on Kubernetes."""
    from training.agent import exit_code_for

    codes = [agent.poll() for agent in run.agents]
    if not any(c not in (None, 0) for c in codes):
        return 0 if all(c == 0 for c in codes) else None
    deadline = time.monotonic() + settle_s
    while any(agent.poll() is None for agent in run.agents) and time.monotonic() < deadline:
        time.sleep(0.1)
    return exit_code_for({agent.poll() for agent in run.agents} - {None, 0})


def tail_of_logs(run: LocalRun, lines: int = 15) -> str:
    """The last lines of every rank's log, to show why a job failed."""
    parts = []
    logs = [*run.log_dir.glob("rank-*.log"), *run.log_dir.glob("agent-*.log"), *run.log_dir.glob("driver.log")]
    for path in sorted(logs):
        content = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        parts.append(f"--- {path} ---\n" + "\n".join(content))
    return "\n".join(parts)


def failure(run: LocalRun, code: int) -> SubmitError:
    return SubmitError(
        f"job {run.spec.name} failed (exit code {code}).\n{tail_of_logs(run)}\n"
        f"full logs: {run.log_dir}/ ; fix the cause and run submit again (it resumes from the last checkpoint)"
    )
