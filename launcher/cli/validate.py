"""`dlaunch validate`: check a spec without running anything or touching the network."""

from __future__ import annotations

import click

from launcher.cli.common import SPEC_ARGUMENT, warn


@click.command("validate")
@SPEC_ARGUMENT
def command(spec_file: str) -> None:
    """Check SPEC and report every problem with its field path and YAML line (exit code 2)."""
    from launcher.spec import load_spec
    from launcher.support import local_run_notes, local_run_problems, unsupported_features

    loaded = load_spec(spec_file)
    for note in loaded.notes:
        warn(note)
    for feature in unsupported_features(loaded.spec):
        warn(f"{feature} (valid, but `submit` will refuse it in this version)")
    for problem in local_run_problems(loaded.spec):
        warn(f"{problem} (valid, but `submit` will refuse it on this machine)")
    for note in local_run_notes(loaded.spec):
        warn(note)
    spec = loaded.spec
    click.secho(f"{spec_file}: valid", fg="green")
    click.echo(f"  job {spec.name}: backend {spec.backend}, target {spec.target}, "
               f"{spec.resources.nodes} node(s) x {spec.resources.procs_per_node} worker(s)")
