"""`dlaunch init`: write a commented starter spec that runs as is on this machine.

The values come from `launcher/templates/starter.yaml`; the comment above each key is the
key's description on the spec's models (`launcher.spec_docs.annotate`), the same text as
README's spec table, so the starter cannot drift from the spec.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import click

from launcher.errors import DlaunchError
from launcher.spec_docs import annotate


@click.command("init")
@click.argument("path", default="cluster.yaml", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
def command(path: str, force: bool) -> None:
    """Write a commented starter job spec to PATH (default: cluster.yaml)."""
    target = Path(path)
    if target.exists() and not force:
        raise DlaunchError(f"{path} already exists; pass --force to overwrite it or choose another path")
    text = starter_text()
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise DlaunchError(f"cannot write {path}: {exc.strerror}") from exc
    click.echo(f"wrote {path}; next: dlaunch validate {path} && dlaunch submit {path}")


def starter_text() -> str:
    """The starter spec: the template's values with every key's description above it."""
    template = resources.files("launcher").joinpath("templates/starter.yaml").read_text(encoding="utf-8")
    return annotate(template)
