"""(text, label) data for sequence classification: label map, tokenization, augmentation, batching."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from training.data.sources import DataError, Document

if TYPE_CHECKING:
    import torch


@dataclass
class LabelledSet:
    """Token ids (unpadded) and integer labels of one split."""

    ids: list[list[int]]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    def item(self, i: int) -> tuple[list[int], int]:
        """Example i: its token ids and class id."""
        return self.ids[i], self.labels[i]

    def global_ids(self, indices: list[int]) -> list[int]:
        return list(indices)


def label_map(docs: list[Document]) -> list[str]:
    """The classes, sorted, as seen in the data; index = class id."""
    labels = sorted({d.label for d in docs if d.label is not None})
    if len(labels) < 2:
        raise DataError(f"the training data has {len(labels)} distinct label(s); classification needs at least 2")
    return labels


def encode(docs: list[Document], tokenizer: Any, classes: list[str], max_len: int, split: str) -> LabelledSet:
    """Tokenize with the model's tokenizer (truncated to max_len); unknown labels are errors."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({d.label for d in docs if d.label not in index})[:5]
    if unknown:
        raise DataError(f"{split} split has labels missing from the label map: {unknown}")
    encoded = tokenizer([d.text for d in docs], truncation=True, max_length=max_len)
    return LabelledSet(ids=encoded["input_ids"], labels=[index[d.label] for d in docs])


@dataclass(frozen=True)
class Augmentation:
    """Random token masking and deletion (never the first/last special tokens)."""

    mask_prob: float = 0.0
    delete_prob: float = 0.0
    mask_id: int | None = None

    def apply(self, ids: list[int], rng: np.random.Generator) -> list[int]:
        if len(ids) <= 2 or (self.mask_prob == 0 and self.delete_prob == 0):
            return ids
        body = ids[1:-1]
        draws = rng.random((len(body), 2))
        kept = [t for t, d in zip(body, draws[:, 0]) if d >= self.delete_prob] or body[:1]
        if self.mask_id is not None and self.mask_prob > 0:
            masks = rng.random(len(kept)) < self.mask_prob
            kept = [self.mask_id if m else t for t, m in zip(kept, masks)]
        return [ids[0], *kept, ids[-1]]


def collate(sequences: list[list[int]], labels: list[int], pad_id: int) -> dict[str, "torch.Tensor"]:
    """Pad a micro-batch to its longest sequence."""
    import torch

    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[row, : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": torch.tensor(labels, dtype=torch.long)}


def confusion_metrics(confusion: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 (over classes present in labels or predictions, as scikit-learn does)."""
    true_pos = np.diag(confusion).astype(float)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    present = (support + predicted) > 0
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = np.divide(true_pos, support, out=np.zeros_like(true_pos), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(true_pos), where=denom > 0)
    total = confusion.sum()
    return {
        "accuracy": float(true_pos.sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
    }
