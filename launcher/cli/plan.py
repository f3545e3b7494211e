"""`dlaunch plan`: show the model size, memory per device for every ZeRO option, and the chosen layout."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from launcher.cli.common import SPEC_ARGUMENT, warn

if TYPE_CHECKING:
    from rich.table import Table

    from launcher.plan import OptionRow, Plan


@click.command("plan")
@SPEC_ARGUMENT
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def command(spec_file: str, output: str) -> None:
    """Print memory per device for each ZeRO stage and offload, and the layout chosen for SPEC.

    Exits 2, after printing the table, when nothing fits (the message names the smallest change) or
    when this machine cannot run a local job's precision (the message names what to use instead).
    """
    from launcher.errors import PlanError
    from launcher.plan import estimate_job
    from launcher.spec import load_spec
    from launcher.support import hardware_problems, local_run_notes

    loaded = load_spec(spec_file)
    plan = estimate_job(loaded.spec)
    if output == "json":
        click.echo(json.dumps(plan.to_json(), indent=2))
    else:
        for note in loaded.notes + local_run_notes(loaded.spec):
            warn(note)
        print_plan(plan, loaded.spec.name)
    if plan.layout is None:
        raise PlanError(plan.problem or "the job does not fit")
    problems = hardware_problems(loaded.spec)
    if problems:
        raise PlanError("the plan fits, but this machine cannot run it:\n  " + "\n  ".join(problems))


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f}"


def _fits_cell(row: "OptionRow") -> str:
    if row.fits is None:
        return "-"
    return "[green]yes[/green]" if row.fits else "[red]no[/red]"


_OFFLOAD_CELL = {"none": "-", "optimizer": "optim", "params": "params", "optimizer+params": "both"}
LEGEND = ("GiB per device. offload both: optimizer and parameters; ckpt: activations with activation "
          "checkpointing; extra: runtime and DeepSpeed buffers; host: host memory per node (model construction, "
          "offloaded states, workers' runtime; on CPU workers the whole total); micro: the "
          "largest micro-batch that fits; *: chosen")


def options_table(plan: "Plan", title: str) -> "Table":
    """Stage x offload x memory per device (GiB) x fits, at the plan's micro-batch."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD)
    for column in ("ZeRO", "offload", "states", "activ.", "ckpt", "extra", "total", "host", "fits", "micro"):
        table.add_column(column, justify="left" if column in ("ZeRO", "offload") else "right",
                         min_width=len(column))
    chosen = plan.layout
    for row in plan.rows:
        m, o = row.memory, row.option
        mark = chosen is not None and (o.stage, o.offload_optimizer, o.offload_params) == (
            chosen.zero_stage, chosen.offload_optimizer, chosen.offload_params)
        table.add_row(
            f"{o.stage}{'*' if mark else ''}", _OFFLOAD_CELL[o.offload], _gib(m.states.device), _gib(m.activations),
            _gib(m.activations_checkpointed), _gib(m.overhead), _gib(m.device_total()),
            _gib(m.host_per_node), _fits_cell(row),
            "-" if row.max_micro is None else str(row.max_micro),
        )
    return table


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _host_line(plan: "Plan") -> str:
    """Host memory of the chosen option per node and per worker, against `resources.memory` when set."""
    m = plan.chosen_memory
    assert m is not None
    line = (f"host: {_gib(m.host_per_node)} GiB per node ({_gib(m.host_per_rank)} GiB per worker: model "
            f"construction {_gib(m.construction)}, offloaded states {_gib(m.states.host)}, runtime)")
    usable = plan.limits.usable_host
    return line + (f" of {_gib(usable)} GiB usable" if usable is not None else "; resources.memory not set")


def print_plan(plan: "Plan", name: str) -> None:
    """The human view: header, options table (GiB per device), the choice and the notes."""
    from rich.console import Console

    from launcher.plan import HEADROOM

    console = Console()
    limits = plan.limits
    console.print(f"model: {plan.model}, {plan.parameters:,} parameters ({_count(plan.parameters)}), "
                  f"{plan.precision}, seq_len {plan.seq_len}")
    if limits.device_bytes is not None:
        console.print(f"device: {limits.device}, {_gib(limits.device_bytes)} GiB "
                      f"({_gib(limits.usable_device or 0)} GiB usable with {HEADROOM:.0%} headroom)"
                      + (f"; host {_gib(limits.host_bytes)} GiB per node" if limits.host_bytes else ""))
    title = f"{name}: memory per device at micro-batch {plan.micro}"
    if limits.device_bytes is None:
        title += " (not checked: no device memory known)"
    console.print(options_table(plan, title))
    console.print(LEGEND, style="dim", highlight=False)
    if plan.chosen_memory is not None:
        console.print(_host_line(plan), highlight=False)
    if plan.layout is not None:
        layout = plan.layout
        console.print(f"chosen: micro {layout.micro} x grad_accum {layout.grad_accum} x data-parallel "
                      f"{layout.data_parallel} = {layout.global_batch}, ZeRO-{layout.zero_stage}"
                      + "".join(f", {k}" for k in ("offload_optimizer", "offload_params") if getattr(layout, k)))
    console.print(f"why: {plan.reason}", highlight=False)
    for note in plan.notes:
        console.print(f"note: {note}", highlight=False)
