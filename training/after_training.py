"""Rank 0's work after the final checkpoint committed: quantize and export as `compression:` asks.

A failure here never fails the worker: the trained model is safe, and a raised error would make
torchrun (or Ray) restart a gang that has finished. It is logged, recorded as a
`post_training_failed` event and reported to the node agent, which exits
`exitcodes.POST_TRAINING_FAILED` (see `training.agent`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.context import TrainContext
    from training.tasks import Task

log = logging.getLogger("training.after_training")


def compress_after_training(ctx: "TrainContext", task: "Task") -> None:
    """Rank 0: quantize / export the final checkpoint as the spec's `compression:` asks, upload the
    artifacts to `<job root>/artifacts/` and log them (W&B artifacts too). The job's `task` gives
    the calibration texts of `keep_float_layers` (`Task.validation_texts`)."""
    import tempfile

    from training.checkpoint.storage import storage_for
    from training.compress.pipeline import HF_FORMAT, example_inputs, export_model
    from training.models.restore import load_trained_model

    compression = ctx.job.training.compression
    if compression is None or not (compression.quantize or compression.export):
        return
    endpoint = ctx.job.training.checkpoint.endpoint_url
    variants = [False, True] if compression.quantize and compression.export else [bool(compression.quantize)]
    with tempfile.TemporaryDirectory() as tmp:
        trained = load_trained_model(ctx.paths.checkpoints, Path(tmp), endpoint)
        inputs = example_inputs(trained.tokenizer, trained.info)
        storage = storage_for(ctx.paths.root, endpoint_url=endpoint)
        keep_float = _float_layers_to_keep(ctx, trained, task)
        for fmt in compression.export or ["torchscript"]:
            if fmt == HF_FORMAT:
                _export_hf(ctx, trained, storage, Path(tmp) / HF_FORMAT)
                continue
            for quantized in variants:
                result = export_model(trained.model, inputs, fmt, Path(tmp) / "out", quantized, keep_float)
                uri = f"{ctx.paths.artifacts(trained.step)}/{result.path.name}"
                storage.upload_file(result.path, uri)
                ctx.tracker.log("artifact", step=trained.step, uri=uri, format=fmt, quantized=quantized,
                                max_abs_diff=result.max_abs_diff, agreement=result.agreement)
                ctx.tracker.log_artifact(result.path, f"{ctx.job.name}-{fmt}{'-int8' if quantized else ''}")


def _export_hf(ctx: "TrainContext", trained: Any, storage: Any, out: Path) -> None:
    """The fp32 model as a Hugging Face directory, reloaded and checked, uploaded to
    `<job root>/artifacts/step-<N>/hf/` (int8 has no Hugging Face form: see `compress/hf.py`)."""
    from training.compress.pipeline import HF_FORMAT, export_hf_directory

    result = export_hf_directory(trained, out)
    uri = f"{ctx.paths.artifacts(trained.step)}/{HF_FORMAT}"
    storage.upload_dir(out, uri)
    ctx.tracker.log("artifact", step=trained.step, uri=uri, format=HF_FORMAT, quantized=False,
                    max_abs_diff=result.max_abs_diff, agreement=None)


def _float_layers_to_keep(ctx: "TrainContext", trained: Any, task: "Task") -> list[str]:
    """The Linear layers `quantize.keep_float_layers` keeps float, ranked on held-out texts."""
    from training.compress.pipeline import float_layers_to_keep

    quantize = ctx.job.training.compression.quantize if ctx.job.training.compression else None
    if not quantize or not quantize.keep_float_layers:
        return []
    texts = task.validation_texts(quantize.calibration_samples)
    keep_float = float_layers_to_keep(trained, texts, quantize.keep_float_layers)
    ctx.tracker.log("quantize", step=trained.step, keep_float=keep_float, calibration_samples=len(texts))
    return keep_float


def record_post_training_failure(message: str) -> None:
    """Tell the node agent (`training.agent`) that post-training work failed, when one runs us."""
    from training.agent import POST_TRAINING_MARKER, STATUS_DIR_ENV

    status_dir = os.environ.get(STATUS_DIR_ENV)
    if status_dir and Path(status_dir).is_dir():
        (Path(status_dir) / POST_TRAINING_MARKER).write_text(message + "\n", encoding="utf-8")


def post_training(ctx: "TrainContext", step: int, task: "Task") -> None:
    """Run `compress_after_training`; report a failure (see the module docstring), never raise it."""
    try:
        compress_after_training(ctx, task)
    except Exception as exc:  # noqa: BLE001 - any failure of this step is reported the same way
        message = f"{type(exc).__name__}: {exc}"
        log.exception("post-training work failed after the final checkpoint (step %d) committed", step)
        ctx.tracker.log("post_training_failed", step=step, error=message)
        record_post_training_failure(f"step {step}: {message}")
