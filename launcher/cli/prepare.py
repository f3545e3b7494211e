"""`dlaunch prepare SPEC`: tokenize a corpus once into a prepared token-shard dataset (local Ray)."""

from __future__ import annotations

import click


@click.command("prepare")
@click.argument("spec_path", metavar="SPEC", type=click.Path(exists=True, dir_okay=False))
@click.option("--num-cpus", type=click.IntRange(min=1), help="CPUs of the local Ray (default: the spec's, else all).")
@click.option("--inline", is_flag=True, help="Tokenize in this process instead of a Ray Data job (tiny corpora).")
def command(spec_path: str, num_cpus: int | None, inline: bool) -> None:
    """Read the data spec SPEC (YAML: inputs, output, tokenizer, ...), tokenize every source into shards
    and commit the dataset (manifest last). Rerun after an interruption: finished shards are kept."""
    from launcher.errors import DlaunchError
    from training.data.prepare.config import load_prepare_spec
    from training.data.prepare.errors import PreparedDataError
    from training.data.prepare.run import prepare

    try:
        spec = load_prepare_spec(spec_path)
        updates = {"num_cpus": num_cpus} if num_cpus else {}
        spec = spec.model_copy(update={**updates, **({"engine": "inline"} if inline else {})})
        manifest = prepare(spec, report=lambda line: click.echo(line, err=True))
    except PreparedDataError as exc:
        raise DlaunchError(f"cannot prepare {spec_path}: {exc}") from exc
    click.echo(f"{spec.output}: {manifest['documents']} documents, {manifest['tokens']} tokens, "
               f"{len(manifest['shards'])} shards")
