"""The supervisor's record of a local job, `runs/<name>/state.json`, and what it means.

The supervisor writes it (atomically) when it starts its agents and whenever one exits: each
agent's pid and exit code, then the job's exit code. Readers (`status`, `list`, a second
`submit`) check that a recorded process is still the same one: a pid alone could have been
reused, so its start time (field 22 of /proc/<pid>/stat) is recorded with it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from launcher.targets.base import EXIT_CODE_MEANINGS
from launcher.targets.local.paths import RunPaths, write_atomically
from training.contract import CONFIG_ERROR, POST_TRAINING_FAILED, PREEMPTED


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after "(comm)" (state first, starttime at index 19), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def start_time(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot), or None if there is no such process."""
    fields = _stat(pid)
    return fields[19] if fields else None


def alive(pid: int | None, started: str | None) -> bool:
    """Whether the process recorded as (`pid`, `started`) still runs (a zombie counts as gone)."""
    fields = _stat(pid) if pid is not None else None
    return fields is not None and fields[0] != "Z" and (started is None or fields[19] == started)


@dataclass
class AgentState:
    """One process of the job: its name (agent-<n>, driver), pid, start time and exit code once it exited."""

    name: str
    pid: int
    started: str | None
    exit_code: int | None = None

    @property
    def running(self) -> bool:
        return self.exit_code is None and alive(self.pid, self.started)

    def describe(self) -> str:
        if self.exit_code is None:
            return "running" if self.running else "gone (exit code not recorded)"
        if self.exit_code == 0:
            return "exited 0"
        return f"exited {self.exit_code}" + (f": {EXIT_CODE_MEANINGS[self.exit_code]}"
                                             if self.exit_code in EXIT_CODE_MEANINGS else "")


@dataclass
class RunState:
    """The supervisor, its agents, and the job's exit code (None while it runs)."""

    supervisor_pid: int
    supervisor_started: str | None
    launched_at: float
    agents: list[AgentState] = field(default_factory=list)
    exit_code: int | None = None
    ended_at: float | None = None
    cancelled: bool = False

    @property
    def supervisor_alive(self) -> bool:
        return alive(self.supervisor_pid, self.supervisor_started)

    @property
    def running(self) -> bool:
        return self.exit_code is None and self.supervisor_alive

    def save(self, paths: RunPaths) -> None:
        write_atomically(paths.state_file, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, paths: RunPaths) -> "RunState | None":
        """The recorded state, or None when the job was never launched by a supervisor."""
        try:
            data = json.loads(paths.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return cls(**{**data, "agents": [AgentState(**a) for a in data.get("agents", [])]})


def job_exit_code(codes: list[int]) -> int:
    """The job's exit code from its agents' codes, the most telling first, as on Kubernetes: a
    configuration error (no retry helps) over a peer that only saw its rendezvous close; post-training
    failure (80) when it is the only failure; preempted (75) when every failure is a clean stop."""
    failed = {code for code in codes if code != 0}
    if not failed:
        return 0
    if CONFIG_ERROR in failed:
        return CONFIG_ERROR
    if failed == {POST_TRAINING_FAILED}:
        return POST_TRAINING_FAILED
    if failed <= {PREEMPTED, -15}:
        return PREEMPTED
    return 1
