"""`dlaunch cancel`: delete a Kubernetes job's objects, its Job or RayJob first (foreground: its pods and what it
owns go before it); checkpoints are kept."""

from __future__ import annotations

import click

from launcher.cli.status import connect_to_job, job_options


@click.command("cancel")
@job_options
@click.option("--wait", is_flag=True, help="Return only once the job's pods are gone.")
def command(spec_file: str | None, name: str | None, namespace: str | None, context: str | None, wait: bool) -> int:
    """Stop a Kubernetes job and delete its objects; its checkpoints stay where they are."""
    from launcher.targets.kubernetes.status import checkpoint_info_for

    job = connect_to_job(spec_file, name, namespace, context)
    if job.spec is not None:
        settings = job.spec.training.checkpoint
        checkpoint = checkpoint_info_for(settings.uri, job.name, settings.endpoint_url)
    else:
        checkpoint = job.backend.checkpoint_of(job.name)  # read before its ConfigMap goes
    deleted = job.backend.delete_job(job.name, wait=wait)
    how = "deleted" if wait else "deleting (foreground: pods stop first, each within its grace period)"
    click.echo(f"job {job.name}: {how} {', '.join(deleted)} in namespace {job.backend.namespace}")
    click.echo(f"checkpoints are kept: {checkpoint.summary()}; submit the same spec again to resume from the latest")
    return 0
