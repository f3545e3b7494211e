"""Helpers shared by the subcommands: printing errors the same way, and naming a job (by name or spec
file) on whichever target holds it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from launcher.errors import DlaunchError, SpecError

if TYPE_CHECKING:
    from launcher.targets.base import Handle, Target

SPEC_ARGUMENT = click.argument("spec_file", metavar="SPEC", type=click.Path(dir_okay=False))


def print_error(exc: DlaunchError) -> None:
    """Print a dlaunch error to stderr: every problem, then what to do next."""
    if isinstance(exc, SpecError):
        count = len(exc.problems)
        click.secho(f"error: {exc.source or 'spec'} has {count} problem{'s' * (count != 1)}:", fg="red", err=True)
        for problem in exc.problems:
            click.echo("  " + problem.render(exc.source).replace("\n", "\n  "), err=True)
        return
    click.secho(f"error: {exc}", fg="red", err=True)


def warn(message: str) -> None:
    click.secho(f"note: {message}", fg="yellow", err=True)


def is_tty() -> bool:
    return sys.stdout.isatty()


OUTPUT_OPTION = click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
                             show_default=True, help="Output format.")
RUNS_DIR_HELP = "Local: the directory of local jobs (runs/<name>/)."


def where_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--runs-dir (local jobs), --namespace and --context (Kubernetes jobs)."""
    decorators = [
        click.option("--runs-dir", default="runs", show_default=True, help=RUNS_DIR_HELP),
        click.option("-n", "--namespace", help="Kubernetes: namespace (default: the spec's; with a name, the "
                                               "kubeconfig context's, else default)."),
        click.option("--context", help="Kubernetes: kubeconfig context (default: the spec's kubernetes.context, "
                                       "else the current context)."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def job_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The job, by name or spec file (`dlaunch status quickstart`, `dlaunch status cluster.yaml`), or
    --name; plus where to look for it."""
    func = where_options(func)
    func = click.option("--name", help="The job's name (the same as giving it as JOB).")(func)
    return click.argument("job", metavar="[JOB]", required=False)(func)


def is_spec_file(job: str) -> bool:
    """A spec file, not a job name: a YAML/JSON path or an existing file (job names are DNS labels)."""
    return job.endswith((".yaml", ".yml", ".json")) or "/" in job or Path(job).is_file()


def find_job(job: str | None, name: str | None, runs_dir: str, namespace: str | None,
             context: str | None) -> tuple["Target", "Handle"]:
    """The target and a handle for the job named by JOB (a name or a spec file) or --name.

    A spec file names its target; a bare name is a local job when `runs/<name>/` holds one, else
    a Kubernetes job."""
    from launcher.targets.base import Where, load_target, target_of_name

    if bool(job) == bool(name):
        raise click.UsageError("name the job: give its NAME or SPEC file, or --name NAME (one of them)")
    where = Where(runs_dir, context, namespace)
    if job and is_spec_file(job):
        from launcher.spec import load_spec

        spec = load_spec(job).spec
        target = load_target(spec.target, where)
        return target, target.find(spec.name, spec)
    job_name = str(job or name)
    target = load_target(target_of_name(job_name, where), where)
    return target, target.find(job_name)
