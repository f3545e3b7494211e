"""`dlaunch cancel`: stop a job; its checkpoints are kept and the next `submit` resumes from them.

Local: SIGTERM, so workers finish their step, checkpoint and exit 75; waits for them by default.
Kubernetes: deletes the job's objects, its Job or RayJob first (foreground: its pods and what it
owns go before it); returns at once unless --wait.
"""

from __future__ import annotations

import click

from launcher.cli.common import find_job, job_options


@click.command("cancel")
@job_options
@click.option("--wait/--no-wait", default=None,
              help="Return only once the job has stopped [default: local yes, Kubernetes no].")
def command(job: str | None, name: str | None, runs_dir: str, namespace: str | None, context: str | None,
            wait: bool | None) -> int:
    """Stop a job (JOB: its name or spec file); its checkpoints stay where they are."""
    target, handle = find_job(job, name, runs_dir, namespace, context)
    cancelled = target.cancel(handle) if wait is None else target.cancel(handle, wait=wait)
    for line in cancelled.messages:
        click.echo(line)
    return 0
