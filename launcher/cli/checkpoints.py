"""`dlaunch checkpoints`: the committed checkpoints of a spec's job, read from its checkpoint URI."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import click

from launcher.cli.common import SPEC_ARGUMENT
from launcher.errors import DlaunchError


@click.command("checkpoints")
@SPEC_ARGUMENT
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def command(spec_file: str, output: str) -> None:
    """List the committed checkpoints of SPEC's job: step, size, age and metric, newest first.

    Only checkpoints whose manifest was written are listed; half-uploaded ones do not exist.
    """
    from launcher.spec import load_spec

    spec = load_spec(spec_file).spec
    uri, rows = job_checkpoints(spec.training.checkpoint.uri, spec.name, spec.training.checkpoint.endpoint_url)
    if output == "json":
        click.echo(json.dumps({"job": spec.name, "uri": uri, "checkpoints": rows}, indent=2))
        return
    print_table(spec.name, uri, rows)


def job_checkpoints(base_uri: str, job: str, endpoint_url: str | None) -> tuple[str, list[dict[str, Any]]]:
    """The job's checkpoint root and one row per committed checkpoint; storage errors become `DlaunchError`."""
    from training.contract import CheckpointError, checkpoints_uri, list_committed

    base = base_uri if "://" in base_uri else os.path.abspath(base_uri)  # as the local target resolves it
    uri = checkpoints_uri(base, job)
    try:
        infos = list_committed(uri, endpoint_url=endpoint_url)
    except CheckpointError as e:
        raise DlaunchError(f"cannot list the checkpoints of job {job} at {uri}: {e}") from e
    now = time.time()
    return uri, [{"step": i.step, "uri": i.uri, "size_bytes": i.size_bytes, "created_at": i.created_at,
                  "age_s": None if i.created_at is None else max(0.0, now - i.created_at),
                  "metric": i.metric, "latest": i.latest} for i in infos]


def print_table(job: str, uri: str, rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not rows:
        console.print(f"job {job} has no committed checkpoints under {uri}")
        return
    table = Table(title=f"checkpoints of {job} ({uri})")
    for column in ("step", "size", "age", "metric", ""):
        table.add_column(column, justify="left" if column == "" else "right")
    for row in rows:
        metric = "" if row["metric"] is None else f"{row['metric']:.4f}"
        table.add_row(str(row["step"]), human_size(row["size_bytes"]), human_age(row["age_s"]), metric,
                      "latest" if row["latest"] else "")
    console.print(table)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
