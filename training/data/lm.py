"""Causal-LM data: documents tokenized, joined with EOS and packed into fixed-length blocks."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from training.data.sources import Document
from training.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer


def split_documents(docs: list[Document], fraction: float, seed: int) -> tuple[list[Document], list[Document]]:
    """Deterministic document-level train/validation split (no block straddles the two)."""
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_val = min(max(1, round(len(docs) * fraction)), len(docs) - 1)
    val_ids = set(order[:n_val])
    train = [d for i, d in enumerate(docs) if i not in val_ids]
    val = [d for i, d in enumerate(docs) if i in val_ids]
    return train, val


def pack_blocks(docs: list[Document], tokenizer: "Tokenizer", seq_len: int, eos_id: int) -> "torch.Tensor":
    """Concatenate token ids of all documents (EOS between them) into [n_blocks, seq_len]."""
    import torch

    ids: list[int] = []
    for encoding in tokenizer.encode_batch([d.text for d in docs], add_special_tokens=False):
        ids.extend(encoding.ids)
        ids.append(eos_id)
    n_blocks = len(ids) // seq_len
    if n_blocks == 0:
        raise ConfigError(f"only {len(ids)} tokens: not enough for one sequence of seq_len {seq_len}")
    return torch.tensor(ids[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)


class PackedBlocks:
    """Raw-text causal-LM blocks held in memory ([n, seq_len]); the same interface as
    `training.data.prepared.LMSamples`, so the task treats both kinds of data alike."""

    def __init__(self, blocks: "torch.Tensor") -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def global_ids(self, indices: list[int]) -> list[int]:
        return list(indices)

    def batch(self, indices: list[int]) -> dict[str, "torch.Tensor"]:
        block = self.blocks[indices]
        return {"input_ids": block, "labels": block}
