"""`dlaunch logs`: rank 0's log by default, `--rank N`, or `--all` ranks interleaved; `--follow` across restarts."""

from __future__ import annotations

import click

from launcher.cli.status import connect_to_job, job_options


@click.command("logs")
@job_options
@click.option("--rank", type=click.IntRange(min=0), default=None, help="Node rank whose log to show (default: 0).")
@click.option("--all", "all_ranks", is_flag=True, help="Every rank's log, interleaved, each line prefixed [rank N].")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming until the job ends, across pod restarts.")
def command(spec_file: str | None, name: str | None, namespace: str | None, context: str | None, rank: int | None,
            all_ranks: bool, follow: bool) -> int:
    """Print a Kubernetes job's logs: one rank's, or all of them with rank prefixes."""
    if all_ranks and rank is not None:
        raise click.UsageError("--rank and --all exclude each other")
    job = connect_to_job(spec_file, name, namespace, context)
    job.backend.get_job_logs(job.name, rank=None if all_ranks else (rank or 0), follow=follow, write=click.echo,
                             kind=job.kind)
    return 0
