"""Sequence classification: text -> one of N classes, with the pretrained backbone's own tokenizer.

The examples are raw labelled texts tokenized by every rank (small corpora), or examples of a
prepared dataset read by global index, whose tokenizer must be the backbone's (checked here,
before any training).

Evaluation reports loss, accuracy and macro-F1 from confusion matrices summed over ranks.
Optional augmentation (masking, deletion) is seeded by (seed, step, sample), so a resumed job
sees the same noise; with `compression.distill` the model is a student of a trained teacher.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from training.config import ResolvedJob
from training.data import classification as cls_data
from training.data.prepared import (PreparedExamples, Split, check_same_vocabulary, log_samples, open_dataset,
                                    prepared_location, strided_splits, validation_dataset)
from training.distributed import WorkerInfo, all_reduce_sum
from training.errors import ConfigError
from training.tasks.base import Task, equal_shares, first_indices, read_splits, user_model

if TYPE_CHECKING:
    import torch
    from torch import nn


class ClassificationTask(Task):
    """Text -> one of N classes with the pretrained model's own tokenizer; accuracy and macro-F1."""

    def __init__(self, job: ResolvedJob, worker: WorkerInfo, job_root: str) -> None:
        from transformers import AutoTokenizer

        from training.models.pretrained import resolve_pretrained

        super().__init__(job, worker, job_root)
        t = job.training
        if not t.model.pretrained:
            raise ConfigError("sequence-classification needs model.pretrained (a backbone with its tokenizer)")
        self.model_dir = resolve_pretrained(t.model.pretrained, t.checkpoint.endpoint_url)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        location = prepared_location(t.data, t.checkpoint.endpoint_url)
        if location is None:
            self._init_raw()
        else:
            self._init_prepared(location)
        self.num_labels = t.model.num_labels or len(self.classes)
        if len(self.classes) > self.num_labels:
            raise ConfigError(f"model.num_labels is {self.num_labels} but the data has {len(self.classes)} "
                             f"classes; set num_labels to at least {len(self.classes)}")
        aug = t.data.augment
        self.augment = cls_data.Augmentation(aug.mask_prob, aug.delete_prob, self.tokenizer.mask_token_id) \
            if aug else None

    def _init_raw(self) -> None:
        """Small corpora: every rank reads and tokenizes the labelled texts."""
        seq_len = self.job.training.data.seq_len
        train_docs, val_docs = read_splits(self.job, with_labels=True)
        self.classes = cls_data.label_map(train_docs + val_docs)
        self.train_set: cls_data.LabelledSet | PreparedExamples = cls_data.encode(
            train_docs, self.tokenizer, self.classes, seq_len, "training")
        self.val_set: cls_data.LabelledSet | PreparedExamples = cls_data.encode(
            val_docs, self.tokenizer, self.classes, seq_len, "validation")

    def _init_prepared(self, location: str) -> None:
        """Prepared examples by global index; the dataset's tokenizer must be the backbone's."""
        data, endpoint = self.job.training.data, self.job.training.checkpoint.endpoint_url
        dataset = open_dataset(location, data, endpoint, "classification")
        check_same_vocabulary(dataset, self.model_dir, "the tokenizer of training.model.pretrained")
        validation = validation_dataset(data, endpoint, "classification")
        self.classes = sorted(set(dataset.label_map) | set(validation.label_map if validation else []))
        if len(self.classes) < 2:
            raise ConfigError(f"training.data: {location} has {len(self.classes)} distinct label(s); "
                              f"classification needs at least 2")
        if validation is not None:
            check_same_vocabulary(validation, self.model_dir, "the tokenizer of training.model.pretrained")
            n, m = dataset.num_examples, validation.num_examples
            train_split, val_split = Split(n, 0, n), Split(m, 0, m)
        else:
            train_split, val_split = strided_splits(dataset.num_examples, data.validation_fraction)
        index = {name: i for i, name in enumerate(self.classes)}
        self.train_set = PreparedExamples(dataset, train_split, data.seq_len, index)
        self.val_set = PreparedExamples(validation or dataset, val_split, data.seq_len, index)

    def validation_texts(self, count: int) -> list[str]:
        """Raw text: the validation documents; prepared data: its validation examples, decoded."""
        if not isinstance(self.val_set, PreparedExamples):
            return super().validation_texts(count)
        rows = [self.val_set.item(j)[0] for j in first_indices(self.val_set, count)]
        return self.tokenizer.batch_decode(rows, skip_special_tokens=True)

    @property
    def train_size(self) -> int:
        """Labelled texts in the training split."""
        return len(self.train_set)

    def build_model(self) -> "nn.Module":
        import torch

        from training.models.classifier import build_classifier
        from training.models.sharded import sharded_construction

        torch.manual_seed(self.job.training.seed)
        model_cfg = self.job.training.model
        compression = self.job.training.compression
        if compression and compression.distill:
            return self._distilled_student(compression.distill)
        with sharded_construction(self.job, wrap_modules=bool(model_cfg.factory)):
            if model_cfg.factory:
                model, self.loss_fn = user_model(self.job, None)
                return model
            return build_classifier(self.model_dir, self.num_labels, model_cfg.overrides)

    def _distilled_student(self, distill: Any) -> "nn.Module":
        """The student of `distill.teacher`; the teacher must know the same classes."""
        from training.distillation import Distiller, build_distilled_student, load_teacher

        teacher, info = load_teacher(distill, "sequence-classification", self.job.training.checkpoint.endpoint_url)
        if info.get("classes") is not None and info["classes"] != self.classes:
            raise ConfigError(f"the teacher {distill.teacher} was trained on other classes than this data has")
        student = build_distilled_student(teacher, distill)
        self.distiller = Distiller(teacher, distill, self.worker.device, self.job.training.precision)
        return student

    def _batch(self, data: cls_data.LabelledSet | PreparedExamples, indices: list[int],
               step: int | None) -> dict[str, "torch.Tensor"]:
        seqs, labels = zip(*(data.item(i) for i in indices))
        if self.augment is not None and step is not None:
            # Seeded by (seed, step, sample): the same sample gets the same noise after a resume.
            seqs = tuple(self.augment.apply(s, np.random.default_rng([self.job.training.seed, step, i]))
                         for s, i in zip(seqs, indices))
        return cls_data.collate(list(seqs), list(labels), self.tokenizer.pad_token_id or 0)

    def train_batch(self, indices: list[int], step: int) -> dict[str, "torch.Tensor"]:
        log_samples(self.worker.rank, step, self.train_set.global_ids(indices))
        return self._batch(self.train_set, indices, step)

    def logits_and_loss(self, engine: Any, batch: dict[str, "torch.Tensor"]) -> tuple["torch.Tensor", "torch.Tensor"]:
        """Logits and loss: the distillation loss with a teacher, the user's loss function, or cross-entropy."""
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
