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

from training.contract import TrainingConfig

MANIFEST = "manifest.json"  # training.data.prepare.run.MANIFEST (not imported: it brings Ray Data's helpers)


@dataclass(frozen=True)
class Vocabulary:
    """The planned vocabulary size (None: the model's own) and where the figure comes from."""

    size: int | None
    source: str


def planned_vocabulary(training: TrainingConfig) -> Vocabulary:
    """The vocabulary the worker will build a preset or factory causal LM with, and its source.

    Prepared data is found as the worker finds it (`training.data.prepared`, or a `train` location
    holding a manifest: `training.data.prepared.prepared_location`)."""
    model = training.model
    if model.type != "causal-lm" or model.pretrained is not None:
        return Vocabulary(None, "the model's own")
    bpe = training.data.tokenizer_vocab_size
    data, endpoint = training.data, training.checkpoint.endpoint_url
    explicit = data.prepared
    location = explicit or (data.train if data.train and not any(ch in data.train for ch in "*?[") else None)
    if location:
        size, problem = manifest_vocab_size(location, endpoint)
        if size is not None:
            return Vocabulary(size, f"the tokenizer of the prepared dataset {location}")
        if explicit:
            return Vocabulary(bpe, f"training.data.tokenizer_vocab_size: the manifest of {location} was not read "
                                   f"here ({problem})")
    return Vocabulary(bpe, "training.data.tokenizer_vocab_size (the worker's own BPE tokenizer; at most this many "
                           "tokens)")


def planned_vocab_size(training: TrainingConfig) -> int | None:
    """The vocabulary size the worker builds a preset or factory causal LM with; None for other models."""
    return planned_vocabulary(training).size


# Planning must not wait on an unreachable store: one attempt, a short connect timeout.
PLAN_S3 = {"max_attempts": 1, "connect_timeout": 2.0, "read_timeout": 10.0}


def manifest_vocab_size(uri: str, endpoint_url: str | None) -> tuple[int | None, str]:
    """`tokenizer.vocab_size` of the prepared dataset at `uri`, or None and why it could not be read.
    Only found sizes are cached (a plan is made several times per command; a missing manifest may appear)."""
    if (uri, endpoint_url) in _FOUND:
        return _FOUND[(uri, endpoint_url)], ""
    try:
        from training.checkpoint.errors import CheckpointError
        from training.checkpoint.storage import S3Options, join_uri, storage_for
    except ImportError as exc:  # boto3 missing where only the launcher is installed
        return None, f"storage client missing: {exc}"
    try:
        storage = storage_for(uri, endpoint_url=endpoint_url, s3_options=S3Options(**PLAN_S3))
        size = json.loads(storage.read_bytes(join_uri(uri, MANIFEST)))["tokenizer"]["vocab_size"]
    except ImportError as exc:
        return None, f"storage client missing: {exc}"
    except (CheckpointError, OSError, ValueError, KeyError, TypeError) as exc:  # storage wraps boto3's errors
        return None, f"{type(exc).__name__}: {exc}"
    if not isinstance(size, int) or size <= 0:
        return None, "no tokenizer.vocab_size in it"
    _FOUND[(uri, endpoint_url)] = size
    return size, ""


_FOUND: dict[tuple[str, str | None], int] = {}
