"""`dlaunch logs`: the job's main log by default (pod 0's; for Ray, the driver's), `--index N`, or `--all`
interleaved; `--follow` across restarts."""

from __future__ import annotations

import click

from launcher.cli.status import connect_to_job, job_options


@click.command("logs")
@job_options
@click.option("--index", "--rank", "index", type=click.IntRange(min=0), default=None,
              help="Pod index whose log to show (DeepSpeed: completion index; Ray: head 0, workers 1..). Not the "
                   "torch node rank, which c10d assigns by host name. --rank is its old name.")
@click.option("--all", "every", is_flag=True,
              help="Every pod's log (and Ray's driver), interleaved, each line prefixed [pod N] or [driver].")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming until the job ends, across pod restarts.")
def command(spec_file: str | None, name: str | None, namespace: str | None, context: str | None, index: int | None,
            every: bool, follow: bool) -> int:
    """Print a Kubernetes job's logs: by default pod 0's, or for Ray the driver's (the training output,
    in KubeRay's submitter pod); one pod's with --index; all of them with --all."""
    if every and index is not None:
        raise click.UsageError("--index and --all exclude each other")
    job = connect_to_job(spec_file, name, namespace, context)
    job.backend.get_job_logs(job.name, index=index, every=every, follow=follow, write=click.echo, kind=job.kind)
    return 0
