"""`dlaunch submit`: validate, plan, prepare the target's request, then print it (--dry-run) or launch it.

The request is one object: `--dry-run` prints `request.text()`, and launch sends or runs that same
request. Local jobs run under a detached supervisor: `--detach` returns at once, otherwise the
progress is shown until the job ends. Kubernetes jobs are applied, then followed with --wait/--follow.
"""

from __future__ import annotations

import threading
from typing import Any

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
@click.option("--detach", is_flag=True, help="Local: start the job in the background and return; follow it with "
              "status, logs and cancel.")
@click.option("--grace-seconds", type=click.IntRange(min=0), default=30, show_default=True,
              help="Local: how long workers get to checkpoint after SIGTERM (Ctrl-C, cancel) before they are killed.")
@click.option("--max-restarts", type=click.IntRange(min=0), default=0, show_default=True,
              help="Local Ray jobs: how often a failed worker group is restarted from the newest checkpoint.")
@click.option("--wait", is_flag=True, help="Kubernetes: stay until the job ends; the exit code is its outcome.")
@click.option("--follow", is_flag=True, help="Kubernetes: like --wait, streaming rank 0's log.")
@click.option("--replace", is_flag=True, help="Kubernetes: replace a running job whose spec changed.")
@click.option("--context", help="Kubernetes: kubeconfig context [default: kubernetes.context, else current].")
@click.option("-n", "--namespace", help="Kubernetes: namespace [default: kubernetes.namespace, else the context's].")
@click.option("--runs-dir", default="runs", show_default=True, help="Local: where jobs keep logs, metrics, job.json.")
def command(spec_file: str, dry_run: bool, dry_run_server: bool, detach: bool, grace_seconds: int, max_restarts: int,
            wait: bool, follow: bool, replace: bool, context: str | None, namespace: str | None, runs_dir: str) -> int:
    """Run the job in SPEC: on this machine (followed to the end, or --detach) or on a Kubernetes cluster."""
    from launcher.spec import load_spec
    from launcher.support import local_run_notes, local_run_problems, unsupported_features
    from launcher.targets.base import SubmitOptions, Where, load_target

    loaded = load_spec(spec_file)
    for note in loaded.notes:
        warn(note)
    spec = loaded.spec
    missing = unsupported_features(spec)
    if missing:
        raise NotSupportedYet("this spec is valid but cannot run yet:\n  " + "\n  ".join(missing))
    refused = local_run_problems(spec)
    if refused:
        raise NotSupportedYet("this spec is valid but cannot run here:\n  " + "\n  ".join(refused))
    for note in local_run_notes(spec):
        warn(note)
    target = load_target(spec.target, Where(runs_dir, context, namespace))
    options = SubmitOptions(wait=wait, follow=follow, replace=replace, grace_s=grace_seconds,
                            max_restarts=max_restarts)
    request = target.prepare(spec, submit_layout(spec, dry_run), options)
    if dry_run:
        click.echo(request.text(), nl=False)
        return 0
    if spec.target == "kubernetes":
        return launch_on_cluster(target, request, dry_run_server)
    return run_local(target, request, detach)


def submit_layout(spec: Any, dry_run: bool) -> Any:
    """The batch layout: the planner's (it refuses, with the smallest change, a job that cannot fit),
    except for a Kubernetes dry run whose layout is fixed, which stays offline like `render`."""
    from launcher.plan import plan_batch, plan_job, skipped_memory_check

    if dry_run and spec.target == "kubernetes":
        skipped = skipped_memory_check(spec)
        if skipped:
            warn(skipped)
        return plan_batch(spec)
    return plan_job(spec).layout


# ----- Kubernetes ---------------------------------------------------------------------------------
def echo_lines(lines: Any) -> None:
    """Lines for the user; notes go to stderr."""
    for line in lines:
        click.echo(line, err=line.startswith("note:"))


def launch_on_cluster(target: Any, request: Any, dry_run_server: bool) -> int:
    """Server dry run, or apply and (with --wait/--follow) stay until the end. 0 succeeded, 1 failed."""
    if dry_run_server:
        echo_lines(target.server_dry_run(request))
        return 0
    handle = target.launch(request)
    echo_lines(handle.messages)
    if not (request.options.wait or request.options.follow):
        return 0
    return follow_to_outcome(target, handle, request.options.follow)


def submit_to_cluster(spec: Any, objects: list[dict[str, Any]], *, context: str | None, namespace: str | None,
                      dry_run_server: bool, wait: bool, follow: bool, replace: bool) -> int:
    """`submit` for objects rendered elsewhere (tests, benchmarks); `namespace`, if given, must be theirs."""
    from launcher.targets.base import SubmitOptions, Where
    from launcher.targets.kubernetes.target import KubeRequest, KubernetesTarget

    options = SubmitOptions(wait=wait, follow=follow, replace=replace)
    request = KubeRequest.from_objects(spec, objects, context=context, namespace=namespace, options=options)
    return launch_on_cluster(KubernetesTarget(Where(context=context, namespace=namespace)), request, dry_run_server)


def show_logs_quietly(target: Any, handle: Any, stop: threading.Event) -> None:
    """The job's main log for `submit --follow`, in a thread: a failure to read logs must not end the wait."""
    from launcher.errors import SubmitError

    try:
        for line in target.logs(handle, follow=True, stop=stop):
            click.echo(line)
    except SubmitError as exc:
        click.echo(f"note: stopped showing logs: {exc}", err=True)


def follow_to_outcome(target: Any, handle: Any, follow: bool) -> int:
    """Wait (streaming the job's main log if `follow`) until the job ends; print and return its outcome."""
    stop = threading.Event()
    follower = None
    if follow:
        follower = threading.Thread(target=show_logs_quietly, args=(target, handle, stop), name="dlaunch-logs",
                                    daemon=True)
        follower.start()
    ref = f"--name {handle.name} -n {handle.where}"
    try:
        outcome = target.wait(handle, on_change=lambda line: click.echo(line, err=True))
    except KeyboardInterrupt:
        click.echo(f"stopped following; job {handle.name} keeps running (dlaunch cancel {ref} stops it)", err=True)
        raise
    finally:
        stop.set()
    if follower is not None:
        follower.join(timeout=30)
    if outcome.succeeded:
        click.echo(f"job {handle.name} succeeded")
        return 0
    click.echo(f"job {handle.name} failed: {outcome.reason or 'no reason given'}; see `dlaunch logs {ref} --all` and "
               f"`dlaunch status {ref}`", err=True)
    return 1


# ----- local --------------------------------------------------------------------------------------
def run_local(target: Any, request: Any, detach: bool) -> int:
    """Launch under the supervisor; with --detach return, else show progress until the end. Ctrl-C
    asks the workers to checkpoint and stop, and waits for them."""
    from rich.console import Console

    from launcher.progress import MetricsFollower

    console = Console(stderr=False)
    follower = MetricsFollower(request.paths.metrics_file)  # from here on: this launch's events only
    handle = target.launch(request)
    if detach:
        name = handle.name
        console.print(f"job {name} started in the background: {handle.where}/")
        console.print(f"next: dlaunch status {name}  |  dlaunch logs {name} --follow  |  dlaunch cancel {name}")
        return 0
    console.print(job_line(request))
    for line in handle.messages:
        console.print(line)
    view = follow_progress(console, target, handle, request, follower)
    outcome = target.wait(handle)
    if not outcome.succeeded:
        raise target.failure(handle, outcome)
    print_outcome(console, view, request.paths)
    return 0


def job_line(request: Any) -> str:
    """`job quickstart: 2 process(es), micro 8 x accum 2 x dp 2 = 32, ZeRO-2, bf16`."""
    import json

    job = json.loads(request.job_json)
    layout = job["layout"]
    return (f"job {request.name}: {job['nodes']} node(s) x {job['procs_per_node']} worker(s), micro {layout['micro']} "
            f"x accum {layout['grad_accum']} x dp {layout['data_parallel']} = "
            f"{layout['micro'] * layout['grad_accum'] * layout['data_parallel']}, "
            f"ZeRO-{layout['zero_stage']}, {job['training']['precision']}")


def follow_progress(console: Any, target: Any, handle: Any, request: Any, follower: Any) -> Any:
    """Show step, loss, tokens/s and ETA until the job ends; on Ctrl-C cancel it (checkpoint, exit 75)."""
    from launcher.progress import ProgressView

    view = ProgressView(console, request.name, request.max_steps)
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (target.wait(handle), done.set()), name="dlaunch-wait", daemon=True)
    waiter.start()
    with view.progress:
        try:
            while not done.wait(POLL_S):
                for event in follower.poll():
                    view.handle(event)
        except KeyboardInterrupt:
            console.print("interrupted: asking workers to checkpoint and stop...")
            target.cancel(handle, wait=True)
            raise
        for event in follower.poll():
            view.handle(event)
    return view


def print_outcome(console: Any, view: Any, paths: Any) -> None:
    """The evaluation history as a table (best row marked), then where results are."""
    from launcher.progress import read_events

    summary = view.summary
    evals = [e for e in read_events(paths.metrics_file) if e.get("event") == "eval"]
    if evals:
        console.print(eval_table(evals, summary.end.get("best", {}) if summary.end else {}))
        first, final = evals[0], evals[-1]
        console.print(f"validation loss: first {first['eval_loss']:.4f} (step {first['step']}) -> "
                      f"final {final['eval_loss']:.4f} (step {final['step']})")
    if summary.end:
        console.print(f"finished at step {summary.end['step']} ({summary.end['reason']})")
    if summary.checkpoints:
        console.print(f"last checkpoint: {summary.checkpoints[-1]}")
    console.print(f"metrics: {paths.metrics_file}   logs: {paths.log_dir}/")


def eval_table(evals: list[dict[str, Any]], best: dict[str, Any]) -> Any:
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
