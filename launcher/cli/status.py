"""`dlaunch status`: a job's phase and why, on either target.

Local: phase, step, loss and ETA, each agent's state and exit code, the last committed checkpoint.
Kubernetes: phase, each pod by index (node, restarts, why it waits or fails), why pods cannot be
created or Kueue holds the job, the last committed checkpoint.
"""

from __future__ import annotations

import json

import click

from launcher.cli.common import OUTPUT_OPTION, find_job, job_options


@click.command("status")
@job_options
@OUTPUT_OPTION
def command(job: str | None, name: str | None, runs_dir: str, namespace: str | None, context: str | None,
            output: str) -> int:
    """Show a job (JOB: its name or spec file): phase, progress or pods, exit codes, last checkpoint."""
    target, handle = find_job(job, name, runs_dir, namespace, context)
    status = target.status(handle)
    click.echo(json.dumps(status.to_json(), indent=2) if output == "json" else status.text())
    return 0
