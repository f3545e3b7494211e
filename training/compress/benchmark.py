"""Measure compressed models side by side: task metric, CPU latency, size, parameter counts.

Used by `bench/compression.py` and by `dlaunch compare`. Every model is seen through one small
interface, a `LogitsFn` (tokenized batch -> logits tensor), so PyTorch float and int8 models,
ONNX Runtime sessions and TorchScript files are measured by the same code. Latency is the
median over repetitions at a fixed number of CPU threads, with the candidates interleaved so
that background load on a shared machine affects them alike.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

LogitsFn = Callable[[Mapping[str, torch.Tensor]], torch.Tensor]
DEFAULT_INPUTS = ("input_ids", "attention_mask")


def torch_logits_fn(model: nn.Module) -> LogitsFn:
    """Logits of a PyTorch model called with keyword tensors, without autograd."""
    from training.compress.export import logits_of

    model.eval()

    def logits(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            return logits_of(model(**batch))

    return logits


def onnx_logits_fn(path: str | Path, threads: int | None = None) -> LogitsFn:
    """Logits of an ONNX file written by `export_onnx`, run by onnxruntime on the CPU."""
    from training.compress.export import onnx_session, run_onnx

    session = onnx_session(path, threads)
    return lambda batch: torch.from_numpy(run_onnx(session, batch))


def torchscript_logits_fn(path: str | Path) -> LogitsFn:
    """Logits of a TorchScript file written by `export_torchscript` (inputs in the export's order)."""
    from training.compress.export import load_torchscript

    module = load_torchscript(path)

    def logits(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            return module(*batch.values())

    return logits


def tokenize_batches(
    tokenizer: "PreTrainedTokenizerBase",
    texts: Sequence[str],
    batch_size: int,
    max_length: int,
    input_names: Sequence[str] = DEFAULT_INPUTS,
) -> list[dict[str, torch.Tensor]]:
    """Texts in order, as batches padded to their longest member (at most `max_length` tokens)."""
    batches = []
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
        batches.append({name: encoded[name] for name in input_names})
    return batches


def predict(logits_fn: LogitsFn, batches: Sequence[Mapping[str, torch.Tensor]]) -> np.ndarray:
    """The arg-max class of every example, in order."""
    return torch.cat([logits_fn(batch).argmax(-1) for batch in batches]).numpy()


def macro_f1(predictions: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Unweighted mean F1 over every class seen in labels or predictions (as scikit-learn's 'macro')."""
    predicted, truth = np.asarray(predictions), np.asarray(labels)
    if predicted.shape != truth.shape or truth.size == 0:
        raise ValueError(f"need as many predictions as labels (> 0), got {predicted.shape} and {truth.shape}")
    classes = np.union1d(predicted, truth)
    scores = []
    for cls in classes:
        true_positive = np.sum((predicted == cls) & (truth == cls))
        errors = np.sum(predicted == cls) + np.sum(truth == cls) - 2 * true_positive
        scores.append(2 * true_positive / (2 * true_positive + errors))
    return float(np.mean(scores))


def agreement(first: np.ndarray, second: np.ndarray) -> float:
    """Fraction of examples on which two sets of predictions are equal."""
    if first.shape != second.shape:
        raise ValueError(f"prediction arrays differ in shape: {first.shape} vs {second.shape}")
    return float(np.mean(first == second))


@contextlib.contextmanager
def cpu_threads(threads: int) -> Iterator[None]:
    """Run PyTorch with exactly `threads` intra-op threads, then restore the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def median_latencies(runners: Mapping[str, Callable[[], object]], repeats: int = 20,
                     warmup: int = 3) -> dict[str, float]:
    """Median wall time in seconds of each runner; runs are interleaved across runners."""
    for _ in range(warmup):
        for run in runners.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def file_bytes(path: str | Path) -> int:
    """Size of a file, or of every file under a directory."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def save_state_dict(model: nn.Module, path: str | Path) -> Path:
    """`torch.save` the model's state dict (int8 modules save their packed int8 weights)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


@dataclass(frozen=True)
class Candidate:
    """One model to compare: how to get its logits, and what is known about its size."""

    name: str
    logits: LogitsFn
    file: Path | None = None
    parameters: int | None = None
    non_embedding_parameters: int | None = None


@dataclass(frozen=True)
class ModelReport:
    """The measured figures of one candidate (latency in milliseconds per batch size)."""

    name: str
    macro_f1: float
    latency_ms: dict[int, float] = field(default_factory=dict)
    file_bytes: int | None = None
    parameters: int | None = None
    non_embedding_parameters: int | None = None


def compare_models(
    candidates: Sequence[Candidate],
    tokenizer: "PreTrainedTokenizerBase",
    texts: Sequence[str],
    labels: Sequence[int],
    batch_sizes: Sequence[int] = (1, 32),
    max_length: int = 64,
    threads: int = 1,
    repeats: int = 20,
    input_names: Sequence[str] = DEFAULT_INPUTS,
) -> list[ModelReport]:
    """Macro-F1 on (texts, labels) and latency on the first texts, for every candidate."""
    batches = tokenize_batches(tokenizer, texts, 64, max_length, input_names)
    with cpu_threads(threads):
        scores = {c.name: macro_f1(predict(c.logits, batches), labels) for c in candidates}
    latency = measure_latency(candidates, tokenizer, texts, batch_sizes, max_length, threads, repeats, input_names)
    return build_reports(candidates, scores, latency)


def measure_latency(
    candidates: Sequence[Candidate],
    tokenizer: "PreTrainedTokenizerBase",
    texts: Sequence[str],
    batch_sizes: Sequence[int] = (1, 32),
    max_length: int = 64,
    threads: int = 1,
    repeats: int = 20,
    input_names: Sequence[str] = DEFAULT_INPUTS,
) -> dict[str, dict[int, float]]:
    """Median milliseconds per batch of the first `b` texts, for every candidate and batch size `b`."""
    latency: dict[str, dict[int, float]] = {c.name: {} for c in candidates}
    with cpu_threads(threads):
        for batch_size in batch_sizes:
            batch = tokenize_batches(tokenizer, texts[:batch_size], batch_size, max_length, input_names)[0]
            runners = {c.name: (lambda fn=c.logits: fn(batch)) for c in candidates}
            for name, seconds in median_latencies(runners, repeats).items():
                latency[name][batch_size] = seconds * 1000
    return latency


def build_reports(candidates: Sequence[Candidate], scores: Mapping[str, float],
                  latency: Mapping[str, dict[int, float]]) -> list[ModelReport]:
    """One `ModelReport` per candidate from its macro-F1 and latencies (file sizes read now)."""
    return [ModelReport(c.name, scores[c.name], dict(latency.get(c.name, {})),
                        file_bytes(c.file) if c.file else None, c.parameters, c.non_embedding_parameters)
            for c in candidates]


def format_table(reports: Sequence[ModelReport]) -> str:
    """A plain-text table: parameters, non-embedding parameters, file MB, latency per batch, macro-F1."""
    batch_sizes = sorted({b for r in reports for b in r.latency_ms})
    header = ["model", "params", "non-emb", "file MB"] + [f"b{b} ms" for b in batch_sizes] + ["macro-F1"]
    rows = [header]
    for r in reports:
        rows.append([r.name, _millions(r.parameters), _millions(r.non_embedding_parameters),
                     "-" if r.file_bytes is None else f"{r.file_bytes / 1e6:.1f}",
                     *(f"{r.latency_ms[b]:.1f}" if b in r.latency_ms else "-" for b in batch_sizes),
                     f"{r.macro_f1:.4f}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def _millions(count: int | None) -> str:
    return "-" if count is None else f"{count / 1e6:.2f}M"
