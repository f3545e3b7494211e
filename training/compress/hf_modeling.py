"""dlaunch's sequence classifier as a transformers model, for `save_pretrained` directories.

transformers has no class for dlaunch's classifier (a mean-pooled encoder and a linear head;
`training/models/classifier.py`), so an exported directory carries this file as
`modeling_dlaunch.py` and names it in `config.json`'s `auto_map`, the way Hub repositories ship
custom heads: `AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True)`
builds it. The parameter names equal `SequenceClassifier`'s (`backbone.*`, `head.*`), so the
trained weights load unchanged.

This file is copied as it is into every export: it imports only torch and transformers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class DlaunchClassifierConfig(PretrainedConfig):
    """The encoder's own config (`backbone`, a dict) plus the head's labels and dropout."""

    model_type = "dlaunch-mean-pooling-classifier"

    def __init__(self, backbone: dict[str, Any] | None = None, classifier_dropout: float = 0.1,
                 **kwargs: Any) -> None:
        self.backbone = backbone or {}
        self.classifier_dropout = classifier_dropout
        super().__init__(**kwargs)


class DlaunchMeanPoolingClassifier(PreTrainedModel):
    """Mean-pooled encoder states -> dropout -> linear head, as dlaunch trained it."""

    config_class = DlaunchClassifierConfig
    base_model_prefix = "backbone"

    def __init__(self, config: DlaunchClassifierConfig) -> None:
        super().__init__(config)
        encoder = AutoConfig.for_model(**config.backbone)
        extra = {"add_pooling_layer": False} if encoder.model_type == "bert" else {}
        self.backbone = AutoModel.from_config(encoder, **extra)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.head = nn.Linear(encoder.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs: Any) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        states = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        logits = self.head(self.dropout(pooled))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)
