"""Sequence classification: a pretrained encoder (`AutoModel`) with a new, freshly initialised head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


class SequenceClassifier(nn.Module):
    """Mean-pooled encoder states -> dropout -> linear head. Returns logits [batch, num_labels]."""

    def __init__(self, backbone: nn.Module, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.config.hidden_size, num_labels)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return self.head(self.dropout(pooled))


def build_classifier(path: Path, num_labels: int, overrides: dict[str, Any], pretrained: bool = True) -> SequenceClassifier:
    """The backbone from `path` (weights, or only its config when `pretrained` is False) plus a new head."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(path, **overrides)
    # BERT's pooler is unused by mean pooling; leaving it out keeps every parameter trained.
    extra = {"add_pooling_layer": False} if config.model_type == "bert" else {}
    if pretrained:
        backbone = AutoModel.from_pretrained(path, config=config, **extra)
    else:
        backbone = AutoModel.from_config(config, **extra)
    dropout = float(getattr(config, "hidden_dropout_prob", 0.1) or 0.0)
    return SequenceClassifier(backbone, num_labels, dropout)
