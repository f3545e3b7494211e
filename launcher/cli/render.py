"""`dlaunch render`: print the Kubernetes objects (or Helm values) a spec becomes; nothing is sent."""

from __future__ import annotations

from pathlib import Path

import click

from launcher.cli.common import SPEC_ARGUMENT, warn


@click.command("render")
@SPEC_ARGUMENT
@click.option("-o", "--output-dir", "output_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write <job><suffix> into this directory instead of printing to stdout.")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json", "helm-values"]), default="yaml",
              show_default=True, help="Multi-document YAML, a JSON List, or values for helm/dlaunch.")
def command(spec_file: str, output_dir: Path | None, fmt: str) -> None:
    """Print the objects SPEC becomes on Kubernetes, exactly as `submit` would send them.

    SPEC is checked exactly as `dlaunch validate` checks it. With a fixed layout, a pretrained
    model on S3 is not read (no credentials needed) and a note says the memory check was skipped.
    """
    from launcher.plan import skipped_memory_check
    from launcher.spec import load_spec
    from launcher.targets.kubernetes.documents import FILE_SUFFIXES, render_spec_documents

    spec = load_spec(spec_file).spec
    text = render_spec_documents(spec, fmt, source=spec_file)
    skipped = skipped_memory_check(spec)
    if skipped:
        warn(skipped)
    if output_dir is None:
        click.echo(text, nl=False)
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{spec.name}{FILE_SUFFIXES[fmt]}"
    path.write_text(text)
    click.echo(f"wrote {path}", err=True)
