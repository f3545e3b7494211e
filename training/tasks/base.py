"""The task-specific half of training, shared by every task: the `Task` interface and its helpers.

A task owns its data, builds its model, turns sample indices into micro-batches, computes the
loss, and evaluates. The loop (`training/loop.py`) is the same for every task and backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from training.config import ResolvedJob
from training.data.lm import split_documents
from training.data.sources import Document, read_documents
from training.distributed import WorkerInfo
from training.errors import ConfigError
from training.hostmem import memory_returned_to_os
from training.imports import load_object

if TYPE_CHECKING:
    import torch
    from torch import nn

LossFn = Callable[[Any, dict[str, Any]], "torch.Tensor"]


def equal_shares(n: int, rank: int, world: int, micro: int, max_batches: int | None) -> list[list[int]]:
    """This rank's evaluation batches: every rank runs the same number (ZeRO-3 needs that)."""
    per_rank = n // world
    share = list(range(rank * per_rank, (rank + 1) * per_rank))
    batches = [share[i:i + micro] for i in range(0, len(share), micro)]
    return batches[:max_batches] if max_batches else batches


def read_splits(job: ResolvedJob, with_labels: bool) -> tuple[list[Document], list[Document]]:
    """(training, validation) documents: the spec's validation data, or a seeded split of the training data."""
    data = job.training.data
    label_field = data.label_field if with_labels else None
    endpoint = job.training.checkpoint.endpoint_url
    docs = read_documents(data.train, data.text_field, label_field, endpoint)
    if data.validation:
        return docs, read_documents(data.validation, data.text_field, label_field, endpoint)
    return split_documents(docs, data.validation_fraction, job.training.seed)


def first_indices(samples: Any, count: int) -> list[int]:
    """Indices of the first `count` samples of a split (all of them when it has fewer)."""
    return list(range(min(count, len(samples))))


def user_model(job: ResolvedJob, vocab_size: int | None) -> tuple["nn.Module", LossFn | None]:
    """`model.factory` -> the user's module, and their loss function when they return one."""
    factory = load_object(job.training.model.factory or "", "model.factory")
    built = factory(job.training.model, vocab_size=vocab_size)
    if isinstance(built, tuple):
        model, loss_fn = built
        return model, loss_fn
    return built, None


class Task(ABC):
    """The task-specific half of training; see the module docstring."""

    def __init__(self, job: ResolvedJob, worker: WorkerInfo, job_root: str) -> None:
        self.job, self.worker, self.job_root = job, worker, job_root
        self.loss_fn: LossFn | None = None
        self.distiller: Any = None  # training.distillation.Distiller, with compression.distill

    @property
    @abstractmethod
    def train_size(self) -> int:
        """Samples in the training split; the sampler draws indices below it."""

    @abstractmethod
    def build_model(self) -> "nn.Module":
        """The network to train, built as the spec's `training.model` says."""

    @abstractmethod
    def train_batch(self, indices: list[int], step: int) -> dict[str, "torch.Tensor"]:
        """The micro-batch of these training samples (`step` seeds any augmentation)."""

    @abstractmethod
    def evaluate(self, engine: Any) -> dict[str, float]:
        """Validation metrics, reduced over every rank (each runs the same number of batches)."""

    @abstractmethod
    def loss(self, engine: Any, batch: dict[str, "torch.Tensor"]) -> "torch.Tensor":
        """The training loss of one micro-batch through `engine`."""

    def validation_texts(self, count: int) -> list[str]:
        """Up to `count` held-out texts (the calibration input of `compression.quantize.keep_float_layers`):
        the first validation documents of raw text. Prepared data keeps no text: tasks on it decode
        their validation samples instead."""
        _, validation = read_splits(self.job, with_labels=False)
        return [doc.text for doc in validation[:count]]

    def describe(self) -> dict[str, Any]:
        """Sizes for the job's start-up log line."""
        return {"train_samples": self.train_size}

    def prepare_model(self) -> "nn.Module":
        """`build_model` plus the spec's activation checkpointing.

        Built with freed buffers handed back to the OS (`training.hostmem`): ZeRO-3 construction
        gathers and frees every module once, and a rank should keep only its partition.
        """
        with memory_returned_to_os():
            model = self.build_model()
        if self.job.training.activation_checkpointing:
            target = getattr(model, "backbone", model)
            if not hasattr(target, "gradient_checkpointing_enable"):
                raise ConfigError("training.activation_checkpointing needs a transformers model "
                                 "(gradient_checkpointing_enable); turn it off for this model.factory")
            target.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model
