"""Export a trained dlaunch checkpoint: rebuild, optionally quantize, write ONNX / TorchScript, verify.

Used by `dlaunch export` and, on rank 0, after training when the spec's `compression:` asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXPORT_SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
# A Hugging Face export is a directory (config, safetensors, tokenizer), never a single file.
HF_FORMAT = "hf"


@dataclass
class ExportResult:
    format: str
    quantized: bool
    path: Path
    max_abs_diff: float | None  # against the PyTorch model (fp32 exports)
    agreement: float | None  # prediction agreement with the PyTorch int8 model (int8 ONNX)


def example_inputs(tokenizer: Any, info: dict[str, Any], texts: list[str] | None = None) -> dict[str, Any]:
    """A small tokenized batch with the inputs the model takes (classifier: ids + mask; LM: ids)."""
    import torch

    texts = texts or ["a small example sentence", "and a second, somewhat longer example sentence to pad"]
    if tokenizer is None:
        vocab = info.get("vocab_size") or 1000
        return {"input_ids": torch.randint(0, vocab, (2, 16), generator=torch.Generator().manual_seed(0))}
    batch = tokenizer(texts, padding=True, truncation=True, max_length=info.get("seq_len", 128), return_tensors="pt")
    if info.get("backbone_config"):
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    return {"input_ids": batch["input_ids"]}


def float_layers_to_keep(trained: Any, texts: list[str], count: int, batch_size: int = 32) -> list[str]:
    """The `count` Linear layers of a `TrainedModel` whose lone int8 quantization changes its outputs
    on the calibration `texts` most (tokenized as the model takes them)."""
    from training.compress.quantize import layer_sensitivity, most_sensitive_layers

    if not count:
        return []
    if trained.tokenizer is None:
        raise ValueError("this checkpoint has no tokenizer to encode calibration texts with")
    batches = [example_inputs(trained.tokenizer, trained.info, texts[i:i + batch_size])
               for i in range(0, len(texts), batch_size)]
    return most_sensitive_layers(layer_sensitivity(trained.model, batches), count)


def export_model(model: Any, inputs: dict[str, Any], fmt: str, out: Path, quantize: bool,
                 keep_float: list[str] | None = None) -> ExportResult:
    """Write one artifact and check it: logits within 1e-4 for fp32, predictions for int8 ONNX.

    `keep_float` names Linear layers the int8 model leaves float (see `float_layers_to_keep`)."""
    from training.compress import export as exporters
    from training.compress.benchmark import agreement, onnx_logits_fn, torch_logits_fn
    from training.compress.quantize import quantize_dynamic_int8

    path = out if out.suffix else out / f"model{'-int8' if quantize else ''}{EXPORT_SUFFIX[fmt]}"
    target = quantize_dynamic_int8(model, keep_float=keep_float or ()) if quantize else model
    if fmt == "onnx":
        exporters.export_onnx(target, inputs, path)
        if not quantize:
            return ExportResult(fmt, False, path, exporters.verify_onnx(path, model, inputs), None)
        reference = torch_logits_fn(target)(inputs).argmax(-1)
        exported = onnx_logits_fn(path)(inputs).argmax(-1)
        return ExportResult(fmt, True, path, None, agreement(reference.numpy(), exported.numpy()))
    exporters.export_torchscript(target, inputs, path)
    return ExportResult(fmt, quantize, path, exporters.verify_torchscript(path, target, inputs), None)


def export_hf_directory(trained: Any, out: Path) -> ExportResult:
    """A `TrainedModel` as a `save_pretrained` directory at `out`, reloaded and checked (see `hf.py`)."""
    from training.compress.hf import export_hf

    inputs = example_inputs(trained.tokenizer, trained.info)
    diff = export_hf(trained.model, trained.info, trained.tokenizer, inputs, out)
    return ExportResult(HF_FORMAT, False, out, diff, None)
