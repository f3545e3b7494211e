"""`dlaunch plan`: show how the job will be laid out before anything runs."""

from __future__ import annotations

import json

import click

from launcher.cli.common import SPEC_ARGUMENT


@click.command("plan")
@SPEC_ARGUMENT
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def command(spec_file: str, output: str) -> None:
    """Print the batch layout (micro x grad_accum x data-parallel = global) and ZeRO stage for SPEC."""
    from rich.console import Console
    from rich.table import Table

    from launcher.plan import plan_batch
    from launcher.spec import load_spec

    spec = load_spec(spec_file).spec
    layout = plan_batch(spec)
    if output == "json":
        click.echo(json.dumps({"chosen": layout.model_dump()}, indent=2))
        return
    table = Table(title=f"plan for {spec.name}")
    for column in ("micro", "grad_accum", "data_parallel", "global", "zero stage"):
        table.add_column(column, justify="right")
    table.add_row(str(layout.micro), str(layout.grad_accum), str(layout.data_parallel),
                  str(layout.global_batch), str(layout.zero_stage))
    Console().print(table)
