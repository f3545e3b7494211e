"""What `dlaunch status` and `dlaunch list` say about a local job, from `runs/<name>/`.

The phase comes from the supervisor's record (`state.json`); step, loss and ETA from rank 0's
events (`metrics.jsonl`); the last committed checkpoint from the checkpoint URI in `job.json`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from launcher.progress import read_events
from launcher.targets.base import exit_code_meaning
from launcher.targets.checkpoints import CheckpointInfo, checkpoint_info
from launcher.targets.local.paths import RunPaths
from launcher.targets.local.state import RunState
from training.contract import PREEMPTED


@dataclass(frozen=True)
class Progress:
    """How far the job got: step of max_steps, the last loss, and the time left at the recent pace."""

    step: int | None = None
    max_steps: int | None = None
    loss: float | None = None
    eta_s: float | None = None

    def describe(self) -> str:
        if self.step is None:
            return "no training step yet"
        parts = [f"step {self.step}/{self.max_steps}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.eta_s is not None:
            parts.append(f"ETA {format_duration(self.eta_s)}")
        return "  ".join(parts)


def format_duration(seconds: float) -> str:
    """`1h02m`, `3m05s`, `12s`."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def progress_of(events: list[dict[str, Any]], running: bool) -> Progress:
    """Step, loss and (while running) ETA from the train events since the last start or resume."""
    starts = [i for i, e in enumerate(events) if e.get("event") in ("start", "resume")]
    recent = [e for e in events[starts[-1] if starts else 0:] if e.get("event") == "train"]
    trains = [e for e in events if e.get("event") == "train"]
    if not trains:
        return Progress()
    last = trains[-1]
    eta = None
    if running and len(recent) >= 2 and recent[-1]["time"] > recent[0]["time"]:
        pace = (recent[-1]["step"] - recent[0]["step"]) / (recent[-1]["time"] - recent[0]["time"])
        eta = (last["max_steps"] - last["step"]) / pace if pace > 0 else None
    return Progress(last["step"], last.get("max_steps"), last.get("loss"), eta)


def phase_of(state: RunState | None, events: list[dict[str, Any]]) -> tuple[str, str]:
    """The job's phase and why, from the supervisor's record (or, without one, its events)."""
    if state is None:
        ended = any(e.get("event") == "end" for e in events)
        return ("Finished" if ended else "Unknown"), "no record of its processes (run by an older dlaunch)"
    if state.exit_code is None:
        if state.supervisor_alive:
            return ("Stopping" if state.cancelled else "Running"), ""
        return "Lost", f"its supervisor (pid {state.supervisor_pid}) ended without recording an outcome"
    if state.exit_code == 0:
        return "Succeeded", ""
    if state.exit_code == PREEMPTED:
        return "Stopped", ("cancelled: " if state.cancelled else "") + exit_code_meaning(state.exit_code)
    return "Failed", exit_code_meaning(state.exit_code) or f"exit code {state.exit_code}"


@dataclass(frozen=True)
class AgentRow:
    name: str
    pid: int
    state: str
    exit_code: int | None


@dataclass(frozen=True)
class LocalStatus:
    """A local job's status: printable as text (`status`) and JSON (`status -o json`)."""

    name: str
    backend: str
    run_dir: str
    phase: str
    reason: str
    progress: Progress
    agents: list[AgentRow]
    checkpoint: CheckpointInfo

    def headline(self) -> str:
        line = f"job {self.name} ({self.backend}, local {self.run_dir}): {self.phase}"
        return f"{line} ({self.reason})" if self.reason else line

    def text(self) -> str:
        rows = [[a.name, str(a.pid), a.state] for a in self.agents]
        agents = table(["AGENT", "PID", "STATE"], rows) if rows else "no agents recorded"
        return (f"{self.headline()}\nprogress: {self.progress.describe()}\n"
                f"checkpoints: {self.checkpoint.summary()}\n{agents}")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "target": "local", "backend": self.backend, "run_dir": self.run_dir,
                "phase": self.phase, "reason": self.reason, "progress": asdict(self.progress),
                "agents": [asdict(a) for a in self.agents], "checkpoint": asdict(self.checkpoint)}


def table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns, two spaces apart; trailing blanks stripped."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows])


def backend_of(paths: RunPaths) -> str:
    try:
        return str(json.loads(paths.job_file.read_text(encoding="utf-8")).get("backend", "?"))
    except (OSError, ValueError):
        return "?"


def local_status(paths: RunPaths) -> LocalStatus:
    """Everything `dlaunch status` shows of the job in `paths`."""
    state = RunState.load(paths)
    events = read_events(paths.metrics_file)
    phase, reason = phase_of(state, events)
    agents = [AgentRow(a.name, a.pid, a.describe(), a.exit_code) for a in (state.agents if state else [])]
    job_text = paths.job_file.read_text(encoding="utf-8")
    return LocalStatus(paths.name, backend_of(paths), str(paths.run_dir), phase, reason,
                       progress_of(events, state is not None and state.running), agents,
                       checkpoint_info(job_text, paths.name, in_pods=False))


def age_of(paths: RunPaths, now: float | None = None) -> str:
    """Since the job was last launched (or its job.json written): `3h`, `12m`, `40s`."""
    state = RunState.load(paths)
    since = state.launched_at if state else paths.job_file.stat().st_mtime
    seconds = max(0, int((now or time.time()) - since))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
