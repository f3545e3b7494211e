"""`dlaunch status`: a Kubernetes job's phase, each rank's pod, why pods wait or fail, the last checkpoint.

Also home of the options every job command shares (`status`, `logs`, `cancel`): the job is
named by its spec file (`dlaunch status cluster.yaml`) or by `--name`, on `--namespace` and
`--context`. Nothing heavy is imported until the command runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from launcher.spec import JobSpec
    from launcher.targets.kubernetes.cluster import Kind, KubernetesBackend

OUTPUT_OPTION = click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
                             show_default=True, help="Output format.")


def job_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """SPEC or --name, plus --namespace and --context."""
    decorators = [
        click.argument("spec_file", metavar="[SPEC]", required=False, type=click.Path(dir_okay=False)),
        click.option("--name", help="The job's name, instead of its SPEC file."),
        click.option("-n", "--namespace", help="Namespace (default: the spec's; with --name, the kubeconfig "
                                               "context's, else default)."),
        click.option("--context", help="kubeconfig context (default: the spec's kubernetes.context, else the "
                                       "current context)."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


@dataclass
class JobRef:
    """A job on a cluster: the backend connected to its namespace, its name, and what is known of it."""

    backend: "KubernetesBackend"
    name: str
    kind: "Kind | None"
    spec: "JobSpec | None"


def connect_to_job(spec_file: str | None, name: str | None, namespace: str | None, context: str | None) -> JobRef:
    """Resolve SPEC or --name to a job and connect to its cluster and namespace."""
    if bool(spec_file) == bool(name):
        raise click.UsageError("name the job: give its SPEC file or --name NAME (one of them)")
    from launcher.targets.kubernetes.cluster import KubernetesBackend, main_kind

    if spec_file is None:
        return JobRef(KubernetesBackend.connect(context, namespace), str(name), None, None)
    from launcher.spec import load_spec
    from launcher.targets.kubernetes.pods import namespace_of

    spec = load_spec(spec_file).spec
    backend = KubernetesBackend.connect(context or spec.kubernetes.context, namespace or namespace_of(spec))
    return JobRef(backend, spec.name, main_kind(spec.backend), spec)


@click.command("status")
@job_options
@OUTPUT_OPTION
def command(spec_file: str | None, name: str | None, namespace: str | None, context: str | None,
            output: str) -> int:
    """Show a Kubernetes job: its phase, each rank's pod (node, restarts, why it waits or fails), last checkpoint."""
    from launcher.targets.kubernetes.status import format_status

    job = connect_to_job(spec_file, name, namespace, context)
    status = job.backend.get_job(job.name, job.kind)
    click.echo(json.dumps(status.to_json(), indent=2) if output == "json" else format_status(status))
    return 0
