"""Plots of a run's logged metrics: loss, learning rate, throughput and evaluation metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launcher.errors import DlaunchError
from launcher.progress import read_events
from training.contract import METRICS_FILE


def find_run_dir(run: str, runs_dir: str = "runs") -> Path:
    """RUN may be a run directory, a job name under `runs_dir`, or a spec file naming the job."""
    path = Path(run)
    if path.is_dir() and (path / METRICS_FILE).exists():
        return path
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        from launcher.spec import load_spec

        return find_run_dir(load_spec(path).spec.name, runs_dir)
    candidate = Path(runs_dir) / run
    if (candidate / METRICS_FILE).exists():
        return candidate
    raise DlaunchError(f"no metrics found for '{run}': pass a run directory (runs/<name>), a job name or its spec")


def series(events: list[dict[str, Any]], event: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric; a resumed run's repeated steps keep their latest value."""
    points = {e["step"]: e[key] for e in events if e.get("event") == event and key in e}
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def _plot(path: Path, title: str, ylabel: str, lines: list[tuple[str, tuple[list[int], list[float]]]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4), dpi=110)
    for label, (steps, values) in lines:
        if steps:
            axes.plot(steps, values, marker="o" if len(steps) < 30 else None, label=label)
    axes.set(title=title, xlabel="optimizer step", ylabel=ylabel)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def write_report(run_dir: Path, out_dir: Path) -> list[Path]:
    """Write loss.png, lr.png, throughput.png (and eval_metrics.png for classifiers) into `out_dir`."""
    events = read_events(run_dir / METRICS_FILE)
    if not any(e.get("event") == "train" for e in events):
        raise DlaunchError(f"{run_dir}/{METRICS_FILE} has no training steps yet")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [
        _plot(out_dir / "loss.png", "loss", "loss",
              [("train", series(events, "train", "loss")), ("validation", series(events, "eval", "eval_loss"))]),
        _plot(out_dir / "lr.png", "learning rate", "lr", [("lr", series(events, "train", "lr"))]),
        _plot(out_dir / "throughput.png", "throughput", "tokens / s",
              [("tokens/s", series(events, "train", "tokens_per_s"))]),
    ]
    quality = [(name, series(events, "eval", key)) for key, name in
               (("eval_accuracy", "accuracy"), ("eval_macro_f1", "macro-F1"))]
    if any(steps for _, (steps, _) in quality):
        written.append(_plot(out_dir / "eval_metrics.png", "validation metrics", "score", quality))
    return written
