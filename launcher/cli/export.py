"""`dlaunch export`: a committed checkpoint as ONNX or TorchScript, optionally int8, verified."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click


@click.command("export")
@click.argument("checkpoint_uri")
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript"]), required=True)
@click.option("--quantize", type=click.Choice(["int8"]), help="Dynamic int8 quantization of Linear layers and embeddings.")
@click.option("-o", "--output", required=True, type=click.Path(), help="File (model.onnx) or directory to write.")
@click.option("--endpoint-url", help="S3-compatible endpoint (else AWS_ENDPOINT_URL).")
def command(checkpoint_uri: str, fmt: str, quantize: str | None, output: str, endpoint_url: str | None) -> None:
    """Export CHECKPOINT_URI (<uri>/<job>/checkpoints for the newest, or .../step-<N>) and check the result
    against PyTorch (logits within 1e-4; int8 ONNX: prediction agreement)."""
    from launcher.errors import DlaunchError
    from training.compress.pipeline import example_inputs, export_model
    from training.models.restore import load_trained_model

    out = Path(output)
    if out.exists() and out.is_file():
        raise DlaunchError(f"{output} exists; choose another path (exports never overwrite)")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            trained = load_trained_model(checkpoint_uri, Path(tmp), endpoint_url)
            inputs = example_inputs(trained.tokenizer, trained.info)
            result = export_model(trained.model, inputs, fmt, out, quantize == "int8")
    except (ValueError, FileNotFoundError) as exc:
        raise DlaunchError(f"cannot export {checkpoint_uri}: {exc}") from exc
    check = (f"max |logits - PyTorch| = {result.max_abs_diff:.2e}" if result.max_abs_diff is not None
             else f"predictions agree with PyTorch int8 on {result.agreement:.1%} of the check batch")
    click.echo(f"wrote {result.path} (step {trained.step}, {fmt}{', int8' if result.quantized else ''}); {check}")
