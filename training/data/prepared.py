"""Training on a prepared dataset (`dlaunch prepare`): which one, its splits, and micro-batches of it.

A rank never reads raw text here: samples come by global index out of `PreparedDataset`
(memory-mapped shards, an s3:// dataset through the node-local cache the ranks of a node share).
Validation is a second prepared dataset, or samples held out of the training one by global index:
- causal LM: the last `validation_fraction` of the windows (a contiguous tail of the token stream,
  so no validation window shares a document with more than one training window at its edge);
- classification: every k-th example, k = round(1 / validation_fraction), so every source file
  (often one per class) contributes to both splits.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.config import DataConfig
from training.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from training.data.prepare.reader import PreparedDataset

SAMPLE_LOG_ENV = "DLAUNCH_SAMPLE_LOG"  # a directory: each rank appends the global sample ids it trains on


def is_prepared(location: str, endpoint_url: str | None) -> bool:
    """Whether `location` holds a committed prepared dataset (its manifest.json)."""
    from training.checkpoint.errors import StorageError
    from training.checkpoint.storage import join_uri, storage_for
    from training.data.prepare.run import MANIFEST

    if any(ch in location for ch in "*?["):
        return False
    try:
        return storage_for(location, endpoint_url=endpoint_url).isfile(join_uri(location, MANIFEST))
    except StorageError:
        return False


def prepared_location(data: DataConfig, endpoint_url: str | None) -> str | None:
    """The prepared training dataset: `data.prepared`, or `data.train` when it holds a manifest."""
    if data.prepared:
        return data.prepared
    return data.train if data.train and is_prepared(data.train, endpoint_url) else None


def open_dataset(uri: str, data: DataConfig, endpoint_url: str | None, expected_task: str) -> "PreparedDataset":
    """Open a prepared dataset through the spec's cache; it must have been prepared for this task."""
    from training.data.prepare.reader import DEFAULT_CACHE, PreparedDataset

    cache_root = Path(data.cache_dir) if data.cache_dir else DEFAULT_CACHE
    cache = cache_root / hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
    dataset = PreparedDataset(uri, cache_dir=cache, cache_limit=int(data.cache_gb * 1e9), endpoint_url=endpoint_url,
                              max_open_shards=8 if uri.startswith("s3://") else 1 << 16)
    if dataset.task != expected_task:
        raise ConfigError(f"training.data: {uri} was prepared for task {dataset.task}, this model needs "
                          f"{expected_task}; run `dlaunch prepare` with task: {expected_task}")
    return dataset


def validation_dataset(data: DataConfig, endpoint_url: str | None, expected_task: str) -> "PreparedDataset | None":
    """The prepared validation dataset the spec names, or None (then samples are held out)."""
    if not data.validation:
        return None
    if not is_prepared(data.validation, endpoint_url):
        raise ConfigError(f"training.data.validation {data.validation} is not a prepared dataset (no manifest.json), "
                          f"but the training data is: prepare it with `dlaunch prepare`, or unset it to hold out "
                          f"training.data.validation_fraction of the training samples")
    return open_dataset(data.validation, data, endpoint_url, expected_task)


@dataclass(frozen=True)
class Split:
    """A split of a prepared dataset: local index j -> the dataset's global sample index."""

    total: int  # samples in the whole dataset
    start: int = 0  # contiguous: [start, start + size)
    size: int = 0
    stride: int = 0  # strided: global indices i with i % stride != 0 (train) or == 0 (validation)
    held_out: bool = False

    def __len__(self) -> int:
        if not self.stride:
            return self.size
        n_val = -(-self.total // self.stride)
        return n_val if self.held_out else self.total - n_val

    def global_index(self, j: int) -> int:
        if not self.stride:
            return self.start + j
        if self.held_out:
            return j * self.stride
        return j // (self.stride - 1) * self.stride + j % (self.stride - 1) + 1


def tail_splits(total: int, fraction: float) -> tuple[Split, Split]:
    """(train, validation): validation is the last `fraction` of the samples (at least one)."""
    n_val = min(max(1, round(total * fraction)), max(total - 1, 0))
    return Split(total, 0, total - n_val), Split(total, total - n_val, n_val)


def strided_splits(total: int, fraction: float) -> tuple[Split, Split]:
    """(train, validation): validation is every k-th sample, k = round(1 / fraction) (at least 2)."""
    stride = max(2, round(1 / fraction))
    return Split(total, stride=stride), Split(total, stride=stride, held_out=True)


class LMSamples:
    """Causal-LM windows of `seq_len` tokens of one split: a micro-batch is [B, seq_len] ids.

    `PreparedDataset.sample` gives seq_len + 1 ids (the shifted target of the last position);
    Hugging Face models shift `labels` themselves, so the batch is the first seq_len ids as both
    inputs and labels: the same blocks, and the same loss, as the raw-text path's packed blocks."""

    def __init__(self, dataset: "PreparedDataset", split: Split, seq_len: int) -> None:
        self.dataset, self.split, self.seq_len = dataset, split, seq_len

    def __len__(self) -> int:
        return len(self.split)

    def global_ids(self, indices: list[int]) -> list[int]:
        return [self.split.global_index(j) for j in indices]

    def batch(self, indices: list[int]) -> dict[str, "torch.Tensor"]:
        import torch

        rows = [self.dataset.sample(i, self.seq_len)[: self.seq_len] for i in self.global_ids(indices)]
        block = torch.from_numpy(np.stack(rows))
        return {"input_ids": block, "labels": block}


class PreparedExamples:
    """Classification examples of one split: token ids cut to `max_len` (keeping the last, SEP, token) and labels."""

    def __init__(self, dataset: "PreparedDataset", split: Split, max_len: int, label_index: dict[str, int]) -> None:
        self.dataset, self.split, self.max_len = dataset, split, max_len
        # dataset label index -> the task's class id (a validation dataset may know fewer classes)
        self._label = [label_index[name] for name in dataset.label_map]

    def __len__(self) -> int:
        return len(self.split)

    def global_ids(self, indices: list[int]) -> list[int]:
        return [self.split.global_index(j) for j in indices]

    def item(self, j: int) -> tuple[list[int], int]:
        ids, label = self.dataset.example(self.split.global_index(j))
        if len(ids) > self.max_len:
            ids = np.concatenate([ids[: self.max_len - 1], ids[-1:]])
        return ids.tolist(), self._label[label]


def log_samples(rank: int, step: int, global_ids: list[int]) -> None:
    """Append the global sample ids this rank trains on at `step` to `$DLAUNCH_SAMPLE_LOG/rank-<r>.jsonl`
    (unset: nothing). A debugging and test hook: the ids of a run, compared across resumes."""
    folder = os.environ.get(SAMPLE_LOG_ENV)
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"rank-{rank}.jsonl"), "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"step": step, "ids": [int(i) for i in global_ids]}) + "\n")


def vocabulary(directory: Path) -> dict[str, int]:
    """token -> id of the tokenizer saved in `directory` (its tokenizer.json, else transformers' loader)."""
    if (directory / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(directory / "tokenizer.json")).get_vocab(with_added_tokens=True)
    from transformers import AutoTokenizer

    return dict(AutoTokenizer.from_pretrained(str(directory)).get_vocab())


def check_same_vocabulary(dataset: "PreparedDataset", model_dir: Path, what: str) -> None:
    """A pretrained model must use the tokenizer the dataset was prepared with, token for token."""
    ours, theirs = vocabulary(dataset.tokenizer_dir()), vocabulary(model_dir)
    if ours == theirs:
        return
    detail = (f"{len(ours)} tokens vs the model's {len(theirs)}" if len(ours) != len(theirs)
              else f"both {len(ours)} tokens, mapped to other ids")
    raise ConfigError(f"training.data: the tokenizer of {dataset.uri} does not match {what} {model_dir} "
                      f"({detail}); prepare the data with `tokenizer: {{pretrained: <the model>}}`")


def check_model_vocab_size(model_dir: Path, vocab_size: int) -> None:
    """The model's embedding must cover every token id of the dataset's tokenizer."""
    config_path = model_dir / "config.json"
    config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    size = config.get("vocab_size")
    if isinstance(size, int) and size < vocab_size:
        raise ConfigError(f"training.model.pretrained {model_dir} has vocab_size {size}, but the prepared data's "
                          f"tokenizer has {vocab_size} tokens: ids past the embedding would crash training")


__all__ = ["LMSamples", "PreparedExamples", "SAMPLE_LOG_ENV", "Split", "check_model_vocab_size",
           "check_same_vocabulary", "is_prepared", "log_samples", "open_dataset", "prepared_location",
           "strided_splits", "tail_splits", "validation_dataset"]
