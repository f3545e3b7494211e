"""Follow a job's metrics file and show step, loss, tokens/s and ETA while it runs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


EVAL_LABELS = {"eval_loss": "validation loss", "perplexity": "perplexity", "eval_accuracy": "accuracy",
               "eval_macro_f1": "macro-F1"}


def format_metrics(event: dict[str, Any]) -> str:
    """'validation loss 2.3140  perplexity 10.1' from an eval event."""
    return "  ".join(f"{label} {event[key]:.1f}" if key == "perplexity" else f"{label} {event[key]:.4f}"
                     for key, label in EVAL_LABELS.items() if key in event)


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every event in a metrics file, across all attempts of the job."""
    return MetricsFollower(path, from_start=True).poll()


class MetricsFollower:
    """Reads the JSON-lines events appended to a metrics file since it was opened."""

    def __init__(self, path: Path, from_start: bool = False) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() and not from_start else 0
        self._partial = ""

    def poll(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("r", encoding="utf-8") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
            self.offset = handle.tell()
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events


@dataclass
class RunSummary:
    """What the run reported: evaluations in order, the last training event, how it ended."""

    evals: list[dict[str, Any]] = field(default_factory=list)
    last_train: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    checkpoints: list[str] = field(default_factory=list)


class ProgressView:
    """A rich progress bar fed with metrics events."""

    def __init__(self, console: Console, name: str, max_steps: int) -> None:
        self.console = console
        self.summary = RunSummary()
        self.progress = Progress(
            TextColumn(f"[bold]{name}[/]"), BarColumn(), TextColumn("step {task.completed:>.0f}/{task.total:>.0f}"),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self.task = self.progress.add_task("train", total=max_steps, stats="starting workers...")

    def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind in ("start", "resume"):
            self.progress.update(self.task, completed=event.get("step", 0), total=event.get("max_steps"))
            if kind == "resume":
                self.console.print(f"resumed from checkpoint at step {event['step']}")
        elif kind == "train":
            self.summary.last_train = event
            self.progress.update(self.task, completed=event["step"], total=event["max_steps"], stats=self._stats())
        elif kind == "eval":
            self.summary.evals.append(event)
            self.console.print(f"step {event['step']:>6}  " + format_metrics(event))
            self.progress.update(self.task, stats=self._stats())
        elif kind == "checkpoint":
            self.summary.checkpoints.append(event["path"])
        elif kind == "end":
            self.summary.end = event

    def _stats(self) -> str:
        parts = []
        if self.summary.last_train:
            t = self.summary.last_train
            parts.append(f"loss {t['loss']:.3f}  {t['tokens_per_s']:,.0f} tok/s")
        if self.summary.evals:
            parts.append(f"val {self.summary.evals[-1]['eval_loss']:.3f}")
        return "  ".join(parts)
