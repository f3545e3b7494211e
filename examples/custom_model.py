"""Bring your own model: `training.model.factory: examples.custom_model:build`.

dlaunch calls `build(model_config, vocab_size=...)` on every rank (after seeding), then does
everything else: data, DeepSpeed, optimizer, schedule, checkpoints, tracking. Return the
module, or `(module, loss_fn)` where `loss_fn(outputs, batch)` returns a scalar tensor.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class TinyGRULanguageModel(nn.Module):
    """Embedding -> GRU -> tied output projection: a next-token model in a few lines."""

    def __init__(self, vocab_size: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden)
        self.rnn = nn.GRU(hidden, hidden, batch_first=True)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        states, _ = self.rnn(self.embed(input_ids))
        return self.norm(states) @ self.embed.weight.T  # logits [batch, seq, vocab]


def next_token_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    labels = batch["labels"]
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), labels[:, 1:].reshape(-1))


def build(model_config: Any, vocab_size: int | None = None) -> tuple[nn.Module, Any]:
    hidden = int(model_config.overrides.get("hidden", 128))
    return TinyGRULanguageModel(vocab_size or 4096, hidden), next_token_loss
