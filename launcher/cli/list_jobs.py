"""`dlaunch list`: your dlaunch jobs in a namespace (everyone's with --all-users), as a table or JSON."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from launcher.cli.status import OUTPUT_OPTION


@click.command("list")
@click.option("-n", "--namespace", help="Namespace (default: the kubeconfig context's, else default).")
@click.option("--context", help="kubeconfig context (default: the current context).")
@click.option("--all-users", is_flag=True, help="Every user's dlaunch jobs, not only yours.")
@OUTPUT_OPTION
def command(namespace: str | None, context: str | None, all_users: bool, output: str) -> int:
    """List your dlaunch jobs on the cluster: name, backend, phase, nodes, age."""
    from launcher.targets.kubernetes.cluster import KubernetesBackend
    from launcher.targets.kubernetes.status import format_job_list

    backend = KubernetesBackend.connect(context, namespace)
    jobs = backend.list_jobs(None if all_users else backend.client.whoami())
    if output == "json":
        click.echo(json.dumps([{**asdict(job), "namespace": backend.namespace} for job in jobs], indent=2))
    else:
        click.echo(format_job_list(jobs, backend.namespace))
    return 0
