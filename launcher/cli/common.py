"""Helpers shared by the subcommands: loading a spec and printing errors the same way."""

from __future__ import annotations

import sys

import click

from launcher.errors import DlaunchError, SpecError

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
