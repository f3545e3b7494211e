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
from pathlib import Path

from training.contract import TrainingConfig

# = training.data.prepare.run.MANIFEST; not imported: that module loads numpy and the shard writers (~150 ms)
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Vocabulary:
    """The planned vocabulary size (None: the model's own) and where the figure comes from."""

    size: int | None
    source: str


def planned_vocabulary(training: TrainingConfig) -> Vocabulary:
    """The vocabulary the worker will build a preset or factory causal LM with, and its source.

    Prepared data is found as the worker finds it (`training.data.prepared`, or a `train` location
    holding a manifest: `training.data.prepared.prepared_location`), except that a `train` on S3 is
    not probed: planning a raw-text S3 corpus must not wait on the network (boto3 looks for
    credentials, metadata endpoints included). Name S3 prepared data in `prepared`."""
    model = training.model
    if model.type != "causal-lm" or model.pretrained is not None:
        return Vocabulary(None, "the model's own")
    bpe = training.data.tokenizer_vocab_size
    data, endpoint = training.data, training.checkpoint.endpoint_url
    explicit = data.prepared
    location = explicit or _local_train_dir(data.train)
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


def _local_train_dir(train: str | None) -> str | None:
    """`train` when it is a local directory (where a manifest could be), else None."""
    if not train or "://" in train.removeprefix("file://") or any(ch in train for ch in "*?["):
        return None
    path = Path(train.removeprefix("file://"))
    return str(path) if path.is_dir() else None


# Planning must not wait on an unreachable store: one attempt, a short connect timeout.
PLAN_S3 = {"max_attempts": 1, "connect_timeout": 2.0, "read_timeout": 10.0}


def manifest_vocab_size(uri: str, endpoint_url: str | None) -> tuple[int | None, str]:
    """`tokenizer.vocab_size` of the prepared dataset at `uri`, or None and why it could not be read.
    Cached per process, failures too: one command plans several times and must ask the store once."""
    if (uri, endpoint_url) in _SEEN:
        return _SEEN[(uri, endpoint_url)]
    try:
        from training.checkpoint.errors import CheckpointError
        from training.checkpoint.storage import S3Options, join_uri, storage_for
    except ImportError as exc:  # boto3 missing where only the launcher is installed
        return None, f"storage client missing: {exc}"
    try:
        storage = storage_for(uri, endpoint_url=endpoint_url, s3_options=S3Options(**PLAN_S3))
        size = json.loads(storage.read_bytes(join_uri(uri, MANIFEST)))["tokenizer"]["vocab_size"]
    except ImportError as exc:
        found: tuple[int | None, str] = None, f"storage client missing: {exc}"
    except (CheckpointError, OSError, ValueError, KeyError, TypeError) as exc:  # storage wraps boto3's errors
        found = None, f"{type(exc).__name__}: {exc}"
    else:
        found = (size, "") if isinstance(size, int) and size > 0 else (None, "no tokenizer.vocab_size in it")
    _SEEN[(uri, endpoint_url)] = found
    return found


_SEEN: dict[tuple[str, str | None], tuple[int | None, str]] = {}
