"""`dlaunch submit`: validate, plan and run a job, following it until it ends."""

from __future__ import annotations

import time

import click

from launcher.cli.common import SPEC_ARGUMENT, warn
from launcher.errors import NotSupportedYet

POLL_S = 0.5


@click.command("submit")
@SPEC_ARGUMENT
@click.option("--runs-dir", default="runs", show_default=True, help="Where local jobs keep logs, metrics and job.json.")
def command(spec_file: str, runs_dir: str) -> int:
    """Run the job in SPEC and follow it to the end; the exit code is the job's outcome."""
    from launcher.plan import plan_batch
    from launcher.spec import load_spec
    from launcher.support import unsupported_features

    loaded = load_spec(spec_file)
    for note in loaded.notes:
        warn(note)
    missing = unsupported_features(loaded.spec)
    if missing:
        raise NotSupportedYet("this spec is valid but cannot run yet:\n  " + "\n  ".join(missing))
    layout = plan_batch(loaded.spec)
    return run_local(loaded.spec, layout, runs_dir)


def run_local(spec, layout, runs_dir: str) -> int:  # type: ignore[no-untyped-def]
    """Start the agents, show progress, stop them cleanly on Ctrl-C, print the outcome."""
    from rich.console import Console

    from launcher.progress import MetricsFollower, ProgressView
    from launcher.targets import local

    console = Console(stderr=False)
    run = local.prepare(spec, layout, runs_dir)
    follower = MetricsFollower(run.metrics_file)
    view = ProgressView(console, spec.name, spec.training.max_steps)
    console.print(f"job {spec.name}: {spec.resources.nodes} node(s) x {spec.resources.procs_per_node} worker(s), "
                  f"micro {layout.micro} x accum {layout.grad_accum} x dp {layout.data_parallel} = "
                  f"{layout.global_batch}, ZeRO-{layout.zero_stage}, {spec.training.precision}")
    console.print(f"logs: {run.log_dir}/")
    code = None
    try:
        local.start_agents(run)
        with view.progress:
            while code is None:
                time.sleep(POLL_S)
                for event in follower.poll():
                    view.handle(event)
                code = local.poll_agents(run)
            for event in follower.poll():
                view.handle(event)
    except KeyboardInterrupt:
        console.print("interrupted: asking workers to checkpoint and stop...")
        raise
    finally:
        # Never leave workers behind: on success they have exited; otherwise SIGTERM lets them checkpoint.
        local.stop_agents(run, spec.kubernetes.termination_grace if code is None else 30)
    if code != 0:
        raise local.failure(run, code)
    print_outcome(console, view, run)
    return 0


def print_outcome(console, view, run) -> None:  # type: ignore[no-untyped-def]
    """The evaluation history as a table (best row marked), then where results are."""
    from launcher.progress import read_events

    summary = view.summary
    evals = [e for e in read_events(run.metrics_file) if e.get("event") == "eval"]
    if evals:
        console.print(eval_table(evals, summary.end.get("best", {}) if summary.end else {}))
        first, final = evals[0], evals[-1]
        console.print(f"validation loss: first {first['eval_loss']:.4f} (step {first['step']}) -> "
                      f"final {final['eval_loss']:.4f} (step {final['step']})")
    if summary.end:
        console.print(f"finished at step {summary.end['step']} ({summary.end['reason']})")
    if summary.checkpoints:
        console.print(f"last checkpoint: {summary.checkpoints[-1]}")
    console.print(f"metrics: {run.metrics_file}   logs: {run.log_dir}/")


def eval_table(evals, best):  # type: ignore[no-untyped-def]
    from rich.table import Table

    from launcher.progress import EVAL_LABELS

    keys = [k for k in EVAL_LABELS if any(k in e for e in evals)]
    table = Table(title="evaluations")
    table.add_column("step", justify="right")
    for key in keys:
        table.add_column(EVAL_LABELS[key], justify="right")
    table.add_column("")
    for event in {e["step"]: e for e in evals}.values():
        marker = "best" if event["step"] == best.get("best_step") else ""
        table.add_row(str(event["step"]), *(f"{event[k]:.4f}" if k in event else "" for k in keys), marker)
    return table
