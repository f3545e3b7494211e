"""`dlaunch report`: PNG plots of a run's loss, learning rate and throughput."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("run")
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Directory for the PNGs [default: RUN/report].")
@click.option("--runs-dir", default="runs", show_default=True)
def command(run: str, output: str | None, runs_dir: str) -> None:
    """Plot the metrics of RUN (a run directory, a job name or its spec file) as PNG files."""
    from launcher.report import find_run_dir, write_report

    run_dir = find_run_dir(run, runs_dir)
    for path in write_report(run_dir, Path(output) if output else run_dir / "report"):
        click.echo(f"wrote {path}")
