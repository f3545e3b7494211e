"""What is being learned: causal LM or sequence classification.

A task owns its data, builds its model, turns sample indices into micro-batches, computes the
loss, and evaluates. The loop (`training/loop.py`) is the same for every task and backend.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.config import ResolvedJob
from training.data import classification as cls_data
from training.data.lm import pack_blocks, split_documents
from training.data.sources import Document, read_documents
from training.data.tokenizer import EOS, tokenizer_from_json, train_bpe
from training.distributed import WorkerInfo, all_reduce_sum, broadcast_object
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
    data = job.training.data
    label_field = data.label_field if with_labels else None
    endpoint = job.training.checkpoint.endpoint_url
    docs = read_documents(data.train, data.text_field, label_field, endpoint)
    if data.validation:
        return docs, read_documents(data.validation, data.text_field, label_field, endpoint)
    return split_documents(docs, data.validation_fraction, job.training.seed)


def user_model(job: ResolvedJob, vocab_size: int | None) -> tuple["nn.Module", LossFn | None]:
    """`model.factory` -> the user's module, and their loss function when they return one."""
    factory = load_object(job.training.model.factory or "", "model.factory")
    built = factory(job.training.model, vocab_size=vocab_size)
    if isinstance(built, tuple):
        model, loss_fn = built
        return model, loss_fn
    return built, None


def vocabulary_difference(old_json: str, new_json: str) -> str | None:
    """How two serialized tokenizers' vocabularies differ (token -> id), or None when they agree."""
    old, new = tokenizer_from_json(old_json).get_vocab(), tokenizer_from_json(new_json).get_vocab()
    if old == new:
        return None
    if len(old) != len(new):
        return f"vocabulary: {len(old)} -> {len(new)} tokens"
    return f"vocabulary: the tokenizer maps tokens to other ids ({len(old)} tokens each)"


class Task(ABC):
    """The task-specific half of training; see the module docstring."""

    def __init__(self, job: ResolvedJob, worker: WorkerInfo, job_root: str) -> None:
        self.job, self.worker, self.job_root = job, worker, job_root
        self.loss_fn: LossFn | None = None
        self.distiller: Any = None  # training.distillation.Distiller, with compression.distill

    @property
    @abstractmethod
    def train_size(self) -> int: ...

    @abstractmethod
    def build_model(self) -> "nn.Module": ...

    @abstractmethod
    def train_batch(self, indices: list[int], step: int) -> dict[str, "torch.Tensor"]: ...

    @abstractmethod
    def evaluate(self, engine: Any) -> dict[str, float]: ...

    @abstractmethod
    def loss(self, engine: Any, batch: dict[str, "torch.Tensor"]) -> "torch.Tensor": ...

    def describe(self) -> dict[str, Any]:
        return {"train_samples": self.train_size}

    def prepare_model(self) -> "nn.Module":
        """`build_model` plus the spec's activation checkpointing."""
        model = self.build_model()
        if self.job.training.activation_checkpointing:
            target = getattr(model, "backbone", model)
            if not hasattr(target, "gradient_checkpointing_enable"):
                raise ValueError("training.activation_checkpointing needs a transformers model "
                                 "(gradient_checkpointing_enable); turn it off for this model.factory")
            target.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model


class CausalLMTask(Task):
    """Next-token prediction on packed blocks; the tokenizer is the model's or a BPE trained here."""

    def __init__(self, job: ResolvedJob, worker: WorkerInfo, job_root: str) -> None:
        super().__init__(job, worker, job_root)
        train_docs, val_docs = read_splits(job, with_labels=False)
        tokenizer = tokenizer_from_json(self._tokenizer_json([d.text for d in train_docs]))
        eos = tokenizer.token_to_id(EOS) if tokenizer.token_to_id(EOS) is not None else 0
        seq_len = job.training.data.seq_len
        self.train_blocks = pack_blocks(train_docs, tokenizer, seq_len, eos)
        self.val_blocks = pack_blocks(val_docs, tokenizer, seq_len, eos)
        self.vocab_size = tokenizer.get_vocab_size()

    def _tokenizer_json(self, texts: list[str]) -> str:
        """Rank 0 loads the pretrained or saved tokenizer, or trains one; every rank gets the same."""
        from training.checkpoint.storage import join_uri, storage_for

        text = None
        if self.worker.is_main:
            pretrained = self._pretrained_dir()
            storage = storage_for(self.job_root, endpoint_url=self.job.training.checkpoint.endpoint_url)
            saved = join_uri(self.job_root, "tokenizer.json")
            if pretrained is not None and (pretrained / "tokenizer.json").is_file():
                text = (pretrained / "tokenizer.json").read_text(encoding="utf-8")
                self._refuse_other_vocabulary(storage, saved, text)
            elif storage.exists(saved):  # a resumed job keeps its tokenizer
                text = storage.read_bytes(saved).decode("utf-8")
            else:
                text = train_bpe(texts, self.job.training.data.tokenizer_vocab_size).to_str()
            storage.write_bytes(saved, text.encode("utf-8"))  # atomic; kept for resume and export
        return broadcast_object(text)

    def _refuse_other_vocabulary(self, storage: Any, saved: str, text: str) -> None:
        """Before the saved tokenizer is replaced: refuse a pretrained tokenizer whose vocabulary
        differs from the one the committed checkpoints were trained with (they keep theirs)."""
        from training.checkpoint.errors import IncompatibleCheckpointError
        from training.checkpoint.storage import join_uri
        from training.models.compat import incompatible_message
        from training.models.restore import CHECKPOINTS_DIR, has_committed_checkpoint

        endpoint = self.job.training.checkpoint.endpoint_url
        if not storage.exists(saved) or not has_committed_checkpoint(self.job_root, endpoint):
            return
        old_text = storage.read_bytes(saved).decode("utf-8")
        difference = None if old_text == text else vocabulary_difference(old_text, text)
        if difference:
            checkpoints = join_uri(self.job_root, CHECKPOINTS_DIR)
            raise IncompatibleCheckpointError(incompatible_message(checkpoints, [difference]))

    def _pretrained_dir(self) -> Path | None:
        from training.models.pretrained import resolve_pretrained

        uri = self.job.training.model.pretrained
        return resolve_pretrained(uri, self.job.training.checkpoint.endpoint_url) if uri else None

    @property
    def train_size(self) -> int:
        return len(self.train_blocks)

    def build_model(self) -> "nn.Module":
        import torch

        from training.models.build import build_causal_lm

        model_cfg = self.job.training.model
        torch.manual_seed(self.job.training.seed)
        if self.job.training.compression and self.job.training.compression.distill:
            raise ValueError("compression.distill supports sequence-classification models in this version")
        if model_cfg.factory:
            model, self.loss_fn = user_model(self.job, self.vocab_size)
            return model
        if model_cfg.pretrained:
            from transformers import AutoModelForCausalLM

            return AutoModelForCausalLM.from_pretrained(self._pretrained_dir(), **model_cfg.overrides)
        return build_causal_lm(model_cfg, vocab_size=self.vocab_size)

    def train_batch(self, indices: list[int], step: int) -> dict[str, "torch.Tensor"]:
        block = self.train_blocks[indices]
        return {"input_ids": block, "labels": block}

    def loss(self, engine: Any, batch: dict[str, "torch.Tensor"]) -> "torch.Tensor":
        outputs = engine(**batch)
        return self.loss_fn(outputs, batch) if self.loss_fn else outputs.loss

    def evaluate(self, engine: Any) -> dict[str, float]:
        """Mean token loss and perplexity over every rank's equal share of the validation blocks."""
        import torch

        t = self.job.training
        batches = equal_shares(len(self.val_blocks), self.worker.rank, self.worker.world,
                               self.job.layout.micro, t.eval.max_batches)
        loss_sum = 0.0
        with torch.no_grad():
            for indices in batches:
                batch = {k: v.to(engine.device) for k, v in
                         {"input_ids": self.val_blocks[indices], "labels": self.val_blocks[indices]}.items()}
                loss_sum += self.loss(engine, batch).float().item() * len(indices)
        total, count = all_reduce_sum([loss_sum, float(sum(len(b) for b in batches))])
        loss = total / max(count, 1.0)
        return {"eval_loss": loss, "perplexity": math.exp(min(loss, 50.0))}

    def describe(self) -> dict[str, Any]:
        return {"train_samples": self.train_size, "validation_samples": len(self.val_blocks),
                "tokens_per_sample": int(self.train_blocks.shape[1])}


class ClassificationTask(Task):
    """Text -> one of N classes with the pretrained model's own tokenizer; accuracy and macro-F1."""

    def __init__(self, job: ResolvedJob, worker: WorkerInfo, job_root: str) -> None:
        from transformers import AutoTokenizer

        from training.models.pretrained import resolve_pretrained

        super().__init__(job, worker, job_root)
        t = job.training
        if not t.model.pretrained:
            raise ValueError("sequence-classification needs model.pretrained (a backbone with its tokenizer)")
        self.model_dir = resolve_pretrained(t.model.pretrained, t.checkpoint.endpoint_url)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        train_docs, val_docs = read_splits(job, with_labels=True)
        self.classes = cls_data.label_map(train_docs + val_docs)
        self.num_labels = t.model.num_labels or len(self.classes)
        if len(self.classes) > self.num_labels:
            raise ValueError(f"model.num_labels is {self.num_labels} but the data has {len(self.classes)} "
                             f"classes; set num_labels to at least {len(self.classes)}")
        self.train_set = cls_data.encode(train_docs, self.tokenizer, self.classes, t.data.seq_len, "training")
        self.val_set = cls_data.encode(val_docs, self.tokenizer, self.classes, t.data.seq_len, "validation")
        aug = t.data.augment
        self.augment = cls_data.Augmentation(aug.mask_prob, aug.delete_prob, self.tokenizer.mask_token_id) \
            if aug else None

    @property
    def train_size(self) -> int:
        return len(self.train_set)

    def build_model(self) -> "nn.Module":
        import torch

        from training.models.classifier import build_classifier

        torch.manual_seed(self.job.training.seed)
        model_cfg = self.job.training.model
        compression = self.job.training.compression
        if compression and compression.distill:
            return self._distilled_student(compression.distill)
        if model_cfg.factory:
            model, self.loss_fn = user_model(self.job, None)
            return model
        return build_classifier(self.model_dir, self.num_labels, model_cfg.overrides)

    def _distilled_student(self, distill: Any) -> "nn.Module":
        """The student of `distill.teacher`; the teacher must know the same classes."""
        from training.distillation import Distiller, build_distilled_student, load_teacher

        teacher, info = load_teacher(distill, "sequence-classification", self.job.training.checkpoint.endpoint_url)
        if info.get("classes") is not None and info["classes"] != self.classes:
            raise ValueError(f"the teacher {distill.teacher} was trained on other classes than this data has")
        student = build_distilled_student(teacher, distill)
        self.distiller = Distiller(teacher, distill, self.worker.device)
        return student

    def _batch(self, data: cls_data.LabelledSet, indices: list[int], step: int | None) -> dict[str, "torch.Tensor"]:
        seqs = [data.ids[i] for i in indices]
        if self.augment is not None and step is not None:
            # Seeded by (seed, step, sample): the same sample gets the same noise after a resume.
            seqs = [self.augment.apply(s, np.random.default_rng([self.job.training.seed, step, i]))
                    for s, i in zip(seqs, indices)]
        return cls_data.collate(seqs, [data.labels[i] for i in indices], self.tokenizer.pad_token_id or 0)

    def train_batch(self, indices: list[int], step: int) -> dict[str, "torch.Tensor"]:
        return self._batch(self.train_set, indices, step)

    def logits_and_loss(self, engine: Any, batch: dict[str, "torch.Tensor"]) -> tuple["torch.Tensor", "torch.Tensor"]:
        import torch.nn.functional as F

        logits = engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        if self.distiller is not None:
            return logits, self.distiller.loss(logits, batch, causal=False)
        loss = self.loss_fn(logits, batch) if self.loss_fn else F.cross_entropy(logits.float(), batch["labels"])
        return logits, loss

    def loss(self, engine: Any, batch: dict[str, "torch.Tensor"]) -> "torch.Tensor":
        return self.logits_and_loss(engine, batch)[1]

    def evaluate(self, engine: Any) -> dict[str, float]:
        """Loss, accuracy and macro-F1 over the validation split (confusion matrices summed over ranks)."""
        import torch

        n_classes = self.num_labels
        confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
        loss_sum = 0.0
        batches = equal_shares(len(self.val_set), self.worker.rank, self.worker.world,
                               self.job.layout.micro, self.job.training.eval.max_batches)
        with torch.no_grad():
            for indices in batches:
                batch = {k: v.to(engine.device) for k, v in self._batch(self.val_set, indices, None).items()}
                logits, loss = self.logits_and_loss(engine, batch)
                loss_sum += loss.float().item() * len(indices)
                np.add.at(confusion, (batch["labels"].cpu().numpy(), logits.argmax(-1).cpu().numpy()), 1)
        summed = all_reduce_sum([loss_sum, *confusion.ravel().astype(float).tolist()])
        total = np.array(summed[1:]).reshape(n_classes, n_classes)
        metrics = cls_data.confusion_metrics(total)
        return {"eval_loss": summed[0] / max(total.sum(), 1.0), "eval_accuracy": metrics["accuracy"],
                "eval_macro_f1": metrics["macro_f1"]}

    def describe(self) -> dict[str, Any]:
        return {"train_samples": self.train_size, "validation_samples": len(self.val_set),
                "classes": len(self.classes)}


def make_task(job: ResolvedJob, worker: WorkerInfo, job_root: str) -> Task:
    if job.training.model.type == "sequence-classification":
        return ClassificationTask(job, worker, job_root)
    return CausalLMTask(job, worker, job_root)
