"""The vocabulary a preset or factory causal LM is built with, decided as the worker decides it.

The worker builds such a model with its tokenizer's size: a prepared dataset's tokenizer
(`training.data.prepared`, recorded in the dataset's manifest.json as `tokenizer.vocab_size`), or
else the BPE it trains itself of `training.data.tokenizer_vocab_size` tokens (an upper bound: BPE
on a small corpus may stop short). Pretrained models and classifiers bring their own vocabulary.
A manifest that cannot be read here (no credentials, no network) leaves the BPE figure, and the
plan says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from training.contract import TrainingConfig

MANIFEST = "manifest.json"  # training.data.prepare.run.MANIFEST (not imported: it brings Ray Data's helpers)


@dataclass(frozen=True)
class Vocabulary:
    """The planned vocabulary size (None: the model's own) and where the figure comes from."""

    size: int | None
    source: str


def planned_vocabulary(training: TrainingConfig) -> Vocabulary:
    model = training.model
    if model.type != "causal-lm" or model.pretrained is not None:
        return Vocabulary(None, "the model's own")
    bpe = training.data.tokenizer_vocab_size
    if training.data.prepared:
        size, problem = manifest_vocab_size(training.data.prepared, training.checkpoint.endpoint_url)
        if size is not None:
            return Vocabulary(size, f"the tokenizer of the prepared dataset {training.data.prepared}")
        return Vocabulary(bpe, f"training.data.tokenizer_vocab_size: the manifest of {training.data.prepared} was "
                               f"not read here ({problem})")
    return Vocabulary(bpe, "training.data.tokenizer_vocab_size (the worker's own BPE tokenizer; at most this many "
                           "tokens)")


def planned_vocab_size(training: TrainingConfig) -> int | None:
    """The vocabulary size the worker builds a preset or factory causal LM with; None for other models."""
    return planned_vocabulary(training).size


@lru_cache(maxsize=32)
def manifest_vocab_size(uri: str, endpoint_url: str | None) -> tuple[int | None, str]:
    """`tokenizer.vocab_size` of the prepared dataset at `uri`, or None and why it could not be read."""
    try:
        from training.checkpoint.errors import CheckpointError
        from training.checkpoint.storage import join_uri, storage_for
    except ImportError as exc:  # boto3 missing where only the launcher is installed
        return None, f"storage client missing: {exc}"
    try:
        raw = storage_for(uri, endpoint_url=endpoint_url).read_bytes(join_uri(uri, MANIFEST))
        size = json.loads(raw)["tokenizer"]["vocab_size"]
    except ImportError as exc:
        return None, f"storage client missing: {exc}"
    except (CheckpointError, OSError, ValueError, KeyError, TypeError) as exc:  # storage wraps boto3's errors
        return None, f"{type(exc).__name__}: {exc}"
    return (int(size), "") if isinstance(size, int) and size > 0 else (None, "no tokenizer.vocab_size in it")
