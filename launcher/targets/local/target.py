"""The local target: jobs on this machine, managed from `runs/<name>/` like jobs on a cluster.

`launch` writes the request's files and starts a supervisor (`supervisor.py`) in a session of its
own, detached from the terminal; the supervisor starts the agents and records their pids and exit
codes. Status, logs, wait, cancel and list read those files, so they work from any later command,
whether the job was submitted with `--detach` or is being followed by `submit`. Nothing here prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import SubmitError
from launcher.spec import JobSpec
from launcher.targets.base import EXIT_CODE_MEANINGS, Cancelled, Handle, JobRow, Outcome, SubmitOptions, Where
from launcher.targets.checkpoints import checkpoint_info
from launcher.targets.local.logs import read_logs
from launcher.targets.local.paths import RunPaths, write_atomically
from launcher.targets.local.request import LocalRequest, prepare
from launcher.targets.local.state import RunState
from launcher.targets.local.status import LocalStatus, age_of, backend_of, local_status
from training.contract import BatchLayout

START_TIMEOUT_S = 30.0
POLL_S = 0.5
# Beyond the workers' grace period: the supervisor's own SIGKILL and bookkeeping.
CANCEL_MARGIN_S = 30.0


class AlreadyRunning(SubmitError):
    """The job is running on this machine already; starting it twice would run two copies."""

    exit_code = 2


@dataclass(frozen=True)
class LocalJob:
    """A handle's local details: the job's files and, when this process launched it, the supervisor."""

    paths: RunPaths
    supervisor: subprocess.Popen[bytes] | None = None


def start_agents(request: LocalRequest) -> subprocess.Popen[bytes]:
    """Write `job.json` and `request.json`, then start the supervisor that starts the agents. Refuses
    (exit 2) while the job runs already; a lock keeps two submits from both starting it."""
    paths = request.paths
    paths.log_dir.mkdir(parents=True, exist_ok=True)
    with (paths.run_dir / ".launch.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = RunState.load(paths)
        if state is not None and state.running:
            raise AlreadyRunning(
                f"job {request.name} is already running on this machine (supervisor pid {state.supervisor_pid}, "
                f"{paths.run_dir}): follow it with `dlaunch status {request.name}` and `dlaunch logs {request.name} "
                f"--follow`, or stop it with `dlaunch cancel {request.name}` before submitting it again")
        write_atomically(paths.job_file, request.job_json)
        write_atomically(paths.request_file, request.to_json())
        paths.state_file.unlink(missing_ok=True)
        with paths.supervisor_log.open("ab") as log:
            supervisor = subprocess.Popen([sys.executable, "-m", "launcher.targets.local.supervisor",
                                           str(paths.run_dir)], stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for_start(paths, supervisor)
    return supervisor


def wait_for_start(paths: RunPaths, supervisor: subprocess.Popen[bytes]) -> None:
    """Until the supervisor has recorded its agents (so a second submit sees the job running)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        state = RunState.load(paths)
        if state is not None and state.supervisor_pid == supervisor.pid and state.agents:
            return
        if supervisor.poll() is not None:
            tail = paths.supervisor_log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            raise SubmitError(f"job {paths.name}: its supervisor exited ({supervisor.returncode}) before starting "
                              "any agent:\n" + "\n".join(tail))
        time.sleep(0.05)
    raise SubmitError(f"job {paths.name}: its supervisor recorded no agents within {START_TIMEOUT_S:.0f} s; see "
                      f"{paths.supervisor_log}")


def tail_of_logs(paths: RunPaths, lines: int = 15) -> str:
    """The last lines of every rank's and agent's log, to show why a job failed."""
    logs = [*paths.log_dir.glob("rank-*.log"), *paths.log_dir.glob("agent-*.log"), *paths.log_dir.glob("driver.log")]
    parts = []
    for path in sorted(logs):
        content = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        parts.append(f"--- {path} ---\n" + "\n".join(content))
    return "\n".join(parts)


def world_size(paths: RunPaths) -> int:
    job = json.loads(paths.job_file.read_text(encoding="utf-8"))
    return int(job["nodes"]) * int(job["procs_per_node"])


def outcome_of(state: RunState | None, status: LocalStatus) -> Outcome:
    return Outcome(status.phase, state.exit_code if state else None, status.reason)


class LocalTarget:
    """Jobs on this machine, each under `<runs_dir>/<name>/`."""

    name = "local"

    def __init__(self, where: Where) -> None:
        self.where = where

    def prepare(self, spec: JobSpec, layout: BatchLayout, options: SubmitOptions) -> LocalRequest:
        return prepare(spec, layout, self.where.runs_dir, options)

    def launch(self, request: LocalRequest) -> Handle:  # type: ignore[override]
        supervisor = start_agents(request)
        paths = request.paths
        return Handle(self.name, request.name, str(paths.run_dir), (f"logs: {paths.log_dir}/",),
                      LocalJob(paths, supervisor))

    def find(self, name: str, spec: JobSpec | None = None) -> Handle:
        paths = RunPaths.of(self.where.runs_dir, name)
        if not paths.job_file.is_file():
            raise SubmitError(f"no local job named '{name}' in {paths.run_dir.parent}: check the name and "
                              "--runs-dir (`dlaunch list` shows your jobs)")
        return Handle(self.name, name, str(paths.run_dir), (), LocalJob(paths))

    def status(self, handle: Handle) -> LocalStatus:
        return local_status(handle.detail.paths)

    def running(self, handle: Handle) -> bool:
        if handle.detail.supervisor is not None:
            handle.detail.supervisor.poll()  # reap it once it has exited
        state = RunState.load(handle.detail.paths)
        return state is not None and state.running

    def logs(self, handle: Handle, *, rank: int | None = None, every: bool = False, follow: bool = False,
             stop: threading.Event | None = None) -> Iterator[str]:
        """Rank `rank`'s log (0 by default), or every rank's with prefixes; following until the job ends
        (or `stop` is set)."""
        paths = handle.detail.paths
        return read_logs(paths, world_size(paths), rank=rank, every=every, follow=follow,
                         running=lambda: self.running(handle) and not (stop is not None and stop.is_set()))

    def wait(self, handle: Handle, on_change: Callable[[str], None] | None = None) -> Outcome:
        """Until the supervisor recorded the job's exit code (or is gone without one)."""
        while self.running(handle):
            time.sleep(POLL_S)
        return outcome_of(RunState.load(handle.detail.paths), self.status(handle))

    def cancel(self, handle: Handle, *, wait: bool = True) -> Cancelled:
        """SIGTERM the job: workers finish their step, checkpoint and exit 75; waits until they have
        (the grace period it was launched with, plus a margin) unless `wait` is False."""
        paths, state = handle.detail.paths, RunState.load(handle.detail.paths)
        checkpoint = lambda: checkpoint_info(paths.job_file.read_text(encoding="utf-8"), handle.name, in_pods=False)  # noqa: E731
        if state is None or not (state.running or any(a.running for a in state.agents)):
            phase = self.status(handle).phase
            return Cancelled([f"job {handle.name} is not running ({phase}): nothing to stop",
                              f"checkpoints: {checkpoint().summary()}"])
        self._terminate(state)
        if not wait:
            return Cancelled([f"job {handle.name}: stopping (workers checkpoint, then exit)"])
        grace = LocalRequest.from_json(paths.request_file.read_text(encoding="utf-8")).grace_s
        deadline = time.monotonic() + grace + CANCEL_MARGIN_S
        while self.running(handle) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        ended = RunState.load(paths)
        code = ended.exit_code if ended else None
        how = f"stopped with exit code {code}" if code is not None else "still stopping"
        meaning = EXIT_CODE_MEANINGS.get(code) if code is not None else None
        return Cancelled([f"job {handle.name}: {how}" + (f" ({meaning})" if meaning else ""),
                          f"checkpoints are kept: {checkpoint().summary()}; submit the same spec again to resume "
                          "from the latest"])

    @staticmethod
    def _terminate(state: RunState) -> None:
        """SIGTERM the supervisor (it stops the agents), or the agents themselves if it is gone."""
        if state.supervisor_alive:
            os.kill(state.supervisor_pid, signal.SIGTERM)
            return
        for agent in state.agents:
            if agent.running:
                os.killpg(agent.pid, signal.SIGTERM)

    def list(self) -> list[JobRow]:
        """Every job under the runs directory, by name."""
        rows = []
        for job_file in sorted(Path(self.where.runs_dir).resolve().glob("*/job.json")):
            paths = RunPaths(job_file.parent)
            status = local_status(paths)
            rows.append(JobRow(paths.name, self.name, backend_of(paths), status.phase, str(paths.run_dir),
                               age_of(paths), {"progress": status.progress.describe()}))
        return rows

    def failure(self, handle: Handle, outcome: Outcome) -> SubmitError:
        """The error `submit` raises for a failed job: its exit code, what it means, the logs' tails."""
        paths = handle.detail.paths
        meaning = EXIT_CODE_MEANINGS.get(outcome.code) if outcome.code is not None else None
        return SubmitError(
            f"job {handle.name} failed (exit code {outcome.code}){f': {meaning}' if meaning else ''}.\n"
            f"{tail_of_logs(paths)}\nfull logs: {paths.log_dir}/ ; fix the cause and run submit again (it resumes "
            "from the last checkpoint)")
