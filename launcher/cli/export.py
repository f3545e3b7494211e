"""`dlaunch export`: a committed checkpoint as ONNX or TorchScript (optionally int8) or a Hugging Face
directory, verified against the checkpoint's model."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click


@click.command("export")
@click.argument("checkpoint_uri")
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript", "hf"]), required=True,
              help="hf: a save_pretrained directory (config, safetensors, tokenizer) for from_pretrained.")
@click.option("--quantize", type=click.Choice(["int8"]), help="Dynamic int8 quantization of Linear layers and embeddings.")
@click.option("--keep-float-layers", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --quantize: leave the N Linear layers whose lone quantization changes the outputs on "
                   "--calibration most in float.")
@click.option("--calibration", type=click.Path(exists=True, dir_okay=True),
              help="Texts (.jsonl with a 'text' field, .txt, or a directory) to rank layers on; use held-out data.")
@click.option("--calibration-samples", type=click.IntRange(min=8), default=512, show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(), help="File (model.onnx) or directory to write.")
@click.option("--endpoint-url", help="S3-compatible endpoint (else AWS_ENDPOINT_URL).")
def command(checkpoint_uri: str, fmt: str, quantize: str | None, keep_float_layers: int, calibration: str | None,
            calibration_samples: int, output: str, endpoint_url: str | None) -> None:
    """Export CHECKPOINT_URI (<uri>/<job>/checkpoints for the newest, or .../step-<N>) and check the result
    against PyTorch (logits within 1e-4; int8 ONNX: prediction agreement)."""
    from launcher.errors import DlaunchError
    from training.compress.export import ExportError
    from training.compress.pipeline import example_inputs, export_hf_directory, export_model, float_layers_to_keep
    from training.data.sources import read_documents
    from training.models.restore import load_trained_model

    out = Path(output)
    if out.exists() and out.is_file():
        raise DlaunchError(f"{output} exists; choose another path (exports never overwrite)")
    if fmt == "hf" and quantize:
        raise click.UsageError("--format hf writes the fp32 model; export int8 as onnx or torchscript")
    if keep_float_layers and (quantize != "int8" or not calibration):
        raise click.UsageError("--keep-float-layers needs --quantize int8 and --calibration DATA (held-out texts to "
                           "rank the layers on)")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            trained = load_trained_model(checkpoint_uri, Path(tmp), endpoint_url)
            if fmt == "hf":
                result = export_hf_directory(trained, out)
                click.echo(f"wrote {out}/ (step {trained.step}, Hugging Face); reloaded with from_pretrained: "
                           f"max |logits - checkpoint| = {result.max_abs_diff:.2e}")
                return
            inputs = example_inputs(trained.tokenizer, trained.info)
            keep_float: list[str] = []
            if keep_float_layers:
                texts = [doc.text for doc in read_documents(calibration)[:calibration_samples]]
                keep_float = float_layers_to_keep(trained, texts, keep_float_layers)
                click.echo(f"kept float (most sensitive on {len(texts)} calibration texts): {', '.join(keep_float)}")
            result = export_model(trained.model, inputs, fmt, out, quantize == "int8", keep_float)
    except (ValueError, FileNotFoundError, ExportError) as exc:
        raise DlaunchError(f"cannot export {checkpoint_uri}: {exc}") from exc
    check = (f"max |logits - PyTorch| = {result.max_abs_diff:.2e}" if result.max_abs_diff is not None
             else f"predictions agree with PyTorch int8 on {result.agreement:.1%} of the check batch")
    click.echo(f"wrote {result.path} (step {trained.step}, {fmt}{', int8' if result.quantized else ''}); {check}")
