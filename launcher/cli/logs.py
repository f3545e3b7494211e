"""`dlaunch logs`: a job's main log by default (local: rank 0's; Kubernetes: pod 0's, for Ray the
driver's), one rank's or pod's, or all of them prefixed; `--follow` until the job ends."""

from __future__ import annotations

import click

from launcher.cli.common import find_job, job_options


@click.command("logs")
@job_options
@click.option("--rank", "--index", "rank", type=click.IntRange(min=0), default=None,
              help="Local: the worker rank (rank-N.log). Kubernetes: the pod index (DeepSpeed: completion index; "
                   "Ray: head 0, workers 1..), not the torch node rank, which c10d assigns by host name.")
@click.option("--all", "every", is_flag=True,
              help="Every rank's (Kubernetes: pod's, and Ray's driver's) log, each line prefixed [rank N], [pod N] "
                   "or [driver].")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming until the job ends (Kubernetes: across pod "
                                                   "restarts).")
def command(job: str | None, name: str | None, runs_dir: str, namespace: str | None, context: str | None,
            rank: int | None, every: bool, follow: bool) -> int:
    """Print a job's logs (JOB: its name or spec file): by default rank 0's (Kubernetes: pod 0's, or for
    Ray the driver's); one rank's with --rank; all of them with --all."""
    if every and rank is not None:
        raise click.UsageError("--index and --all exclude each other")
    target, handle = find_job(job, name, runs_dir, namespace, context)
    for line in target.logs(handle, rank=rank, every=every, follow=follow):
        click.echo(line)
    return 0
