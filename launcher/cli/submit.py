"""`dlaunch submit`: validate, plan and run a job, following it until it ends."""

from __future__ import annotations

import time

import click

from launcher.cli.common import SPEC_ARGUMENT, warn
from launcher.errors import NotSupportedYet

POLL_S = 0.5


@click.command("submit")
@SPEC_ARGUMENT
@click.option("--dry-run", is_flag=True, help="Print exactly what would be sent (Kubernetes objects) or run "
              "(job.json and commands); contact nothing, start nothing.")
@click.option("--dry-run-server", is_flag=True, help="Kubernetes: pre-flight, then let the API server validate "
              "every object (dryRun=All) without creating anything.")
@click.option("--wait", is_flag=True, help="Kubernetes: stay until the job ends; the exit code is its outcome.")
@click.option("--follow", is_flag=True, help="Kubernetes: like --wait, streaming rank 0's log.")
@click.option("--replace", is_flag=True, help="Kubernetes: replace a running job whose spec changed.")
@click.option("--context", help="Kubernetes: kubeconfig context [default: kubernetes.context, else current].")
@click.option("-n", "--namespace", help="Kubernetes: namespace [default: kubernetes.namespace, else the context's].")
@click.option("--runs-dir", default="runs", show_default=True, help="Local: where jobs keep logs, metrics, job.json.")
def command(spec_file: str, dry_run: bool, dry_run_server: bool, wait: bool, follow: bool, replace: bool,
            context: str | None, namespace: str | None, runs_dir: str) -> int:
    """Run the job in SPEC: on this machine (followed to the end) or on a Kubernetes cluster."""
    from launcher.spec import load_spec
    from launcher.support import local_run_problems, unsupported_features

    loaded = load_spec(spec_file)
    for note in loaded.notes:
        warn(note)
    missing = unsupported_features(loaded.spec)
    if missing:
        raise NotSupportedYet("this spec is valid but cannot run yet:\n  " + "\n  ".join(missing))
    refused = local_run_problems(loaded.spec)
    if refused:
        raise NotSupportedYet("this spec is valid but cannot run here:\n  " + "\n  ".join(refused))
    layout = submit_layout(loaded.spec, dry_run)
    if loaded.spec.target == "kubernetes":
        return submit_kubernetes(loaded.spec, layout, dry_run=dry_run, dry_run_server=dry_run_server, wait=wait,
                                 follow=follow, replace=replace, context=context, namespace=namespace)
    if dry_run:
        from launcher.targets import local

        click.echo(local.dry_run_text(loaded.spec, layout, runs_dir))
        return 0
    return run_local(loaded.spec, layout, runs_dir)


def submit_layout(spec, dry_run: bool):  # type: ignore[no-untyped-def]
    """The batch layout: the planner's (it refuses, with the smallest change, a job that cannot fit),
    except for a Kubernetes dry run whose layout is fixed, which stays offline like `render`."""
    from launcher.plan import plan_batch, plan_job, skipped_memory_check

    if dry_run and spec.target == "kubernetes":
        skipped = skipped_memory_check(spec)
        if skipped:
            warn(skipped)
        return plan_batch(spec)
    return plan_job(spec).layout


def submit_kubernetes(spec, layout, *, dry_run: bool, dry_run_server: bool, wait: bool, follow: bool,  # type: ignore[no-untyped-def]
                      replace: bool, context: str | None, namespace: str | None) -> int:
    """Render the objects and print them (--dry-run) or send them to the cluster."""
    from launcher.targets.kubernetes.documents import objects_to_yaml
    from launcher.targets.kubernetes.render import render

    if dry_run:
        from launcher.targets.kubernetes.cluster import with_namespace

        click.echo(objects_to_yaml(render(with_namespace(spec, namespace), layout)), nl=False)
        return 0
    from launcher.targets.kubernetes.cluster import submit_to_cluster, with_namespace

    spec = with_namespace(spec, namespace)
    return submit_to_cluster(spec, render(spec, layout), context=context, namespace=namespace,
                             dry_run_server=dry_run_server, wait=wait, follow=follow, replace=replace)


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
