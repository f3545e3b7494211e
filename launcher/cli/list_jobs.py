"""`dlaunch list`: local jobs (from the runs directory) and, where a cluster is configured, your dlaunch
jobs in its namespace (everyone's with --all-users), as tables or JSON.

Without a kubeconfig only local jobs are listed. When the cluster cannot be asked and no
--namespace/--context asked for it, the local jobs are still listed, with a note.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from launcher.cli.common import OUTPUT_OPTION, RUNS_DIR_HELP, warn
from launcher.errors import DlaunchError


def local_table(rows: list[Any], runs_dir: str) -> str:
    from launcher.targets.local.status import table

    body = [[r.name, r.backend, r.phase, r.extra["progress"], r.age] for r in rows]
    return f"local jobs in {runs_dir}/:\n" + table(["NAME", "BACKEND", "PHASE", "PROGRESS", "AGE"], body)


def cluster_jobs(where: Any, all_users: bool, asked: bool) -> tuple[list[Any], str] | None:
    """(rows, namespace) of the cluster's jobs; None without a cluster, or when it failed unasked."""
    from launcher.targets.base import load_target

    target = load_target("kubernetes", where)
    if not asked and not target.available():
        return None
    try:
        return target.list(all_users=all_users), target.namespace()
    except DlaunchError as exc:
        if asked:
            raise
        warn(f"Kubernetes jobs not listed: {exc}")
        return None


@click.command("list")
@click.option("--runs-dir", default="runs", show_default=True, help=RUNS_DIR_HELP)
@click.option("-n", "--namespace", help="Kubernetes: namespace (default: the kubeconfig context's, else default).")
@click.option("--context", help="Kubernetes: kubeconfig context (default: the current context).")
@click.option("--all-users", is_flag=True, help="Kubernetes: every user's dlaunch jobs, not only yours.")
@OUTPUT_OPTION
def command(runs_dir: str, namespace: str | None, context: str | None, all_users: bool, output: str) -> int:
    """List jobs: local ones (name, backend, phase, progress, age), then your jobs on the cluster."""
    from launcher.targets.base import Where, load_target

    where = Where(runs_dir, context, namespace)
    local = load_target("local", where).list()
    cluster = cluster_jobs(where, all_users, asked=bool(namespace or context))
    if output == "json":
        records = [{"name": r.name, "target": "local", "backend": r.backend, "phase": r.phase, "run_dir": r.where,
                    "age": r.age, "progress": r.extra["progress"]} for r in local]
        records += [{**asdict(r.extra["summary"]), "target": "kubernetes", "namespace": r.where}
                    for r in (cluster[0] if cluster else [])]
        click.echo(json.dumps(records, indent=2))
        return 0
    blocks = [local_table(local, runs_dir)] if local else []
    if cluster is not None:
        from launcher.targets.kubernetes.status import format_job_list

        blocks.append(format_job_list([r.extra["summary"] for r in cluster[0]], cluster[1]))
    click.echo("\n\n".join(blocks) if blocks else f"no dlaunch jobs in {runs_dir}/ (and no Kubernetes "
                                                  "configuration here: no kubeconfig)")
    return 0
