"""The `dlaunch` command line. Each subcommand lives in its own module, imported only when run."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from training import __version__

# Subcommand name -> module defining `command`. Modules are imported lazily so that
# `dlaunch --help` stays fast and never pulls in torch, deepspeed, ray or kubernetes.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("launcher.cli.init", "Write a commented starter job spec."),
    "validate": ("launcher.cli.validate", "Check a job spec and report every problem at once."),
    "plan": ("launcher.cli.plan", "Show how the batch is laid out across workers."),
    "render": ("launcher.cli.render", "Print the Kubernetes objects (or Helm values) a spec becomes."),
    "submit": ("launcher.cli.submit", "Run a job: on this machine or on a Kubernetes cluster."),
    "status": ("launcher.cli.status", "Show a job's phase, progress or pods, exit codes and last checkpoint."),
    "logs": ("launcher.cli.logs", "Print a job's logs (one rank or all; --follow)."),
    "list": ("launcher.cli.list_jobs", "List local jobs and your dlaunch jobs on the cluster."),
    "cancel": ("launcher.cli.cancel", "Stop a job (workers checkpoint first); its checkpoints are kept."),
    "checkpoints": ("launcher.cli.checkpoints", "List a job's committed checkpoints: step, size, age, metric."),
    "report": ("launcher.cli.report", "Plot a run's loss, learning rate and throughput as PNG files."),
    "export": ("launcher.cli.export", "Export a checkpoint to ONNX or TorchScript (optionally int8), verified."),
    "prepare": ("launcher.cli.prepare", "Tokenize a corpus once into token shards (local or s3://), as a Ray Data job."),
    "compare": ("launcher.cli.compare", "Compare teacher, student and int8 student: size, latency, macro-F1."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module = importlib.import_module(COMMANDS[cmd_name][0])
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_text) for name, (_, help_text) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="dlaunch")
def cli() -> None:
    """dlaunch: run distributed DeepSpeed or Ray Train jobs from one spec, here or on Kubernetes."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (callable from tests)."""
    from launcher.errors import DlaunchError

    try:
        result: Any = cli.main(args=argv, prog_name="dlaunch", standalone_mode=False)
    except DlaunchError as exc:
        from launcher.cli.common import print_error

        print_error(exc)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
