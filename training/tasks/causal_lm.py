"""Causal language modelling: next-token prediction on fixed-length blocks of the training text.

Prepared data (`training.data.prepared`, see `training.data.prepared`): blocks are windows of
the dataset's token stream read by global index, and the tokenizer is the dataset's (a pretrained
model must share it). Raw text (small corpora): every rank packs the text into blocks, with the
pretrained model's tokenizer or a byte-level BPE trained on the training split by rank 0. Either
way the tokenizer is saved beside the checkpoints, so a resumed job and `dlaunch export` use it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.config import ResolvedJob
from training.data.lm import PackedBlocks, pack_blocks
from training.data.prepared import (LMSamples, Split, check_model_vocab_size, check_same_vocabulary, log_samples,
                                    open_dataset, prepared_location, tail_splits, validation_dataset)
from training.data.tokenizer import EOS, tokenizer_from_json, train_bpe
from training.distributed import WorkerInfo, all_reduce_sum, broadcast_object
from training.errors import ConfigError
from training.tasks.base import Task, equal_shares, first_indices, read_splits, user_model

if TYPE_CHECKING:
    import torch
    from torch import nn


def vocabulary_difference(old_json: str, new_json: str) -> str | None:
    """How two serialized tokenizers' vocabularies differ (token -> id), or None when they agree."""
    old, new = tokenizer_from_json(old_json).get_vocab(), tokenizer_from_json(new_json).get_vocab()
    if old == new:
        return None
    if len(old) != len(new):
        return f"vocabulary: {len(old)} -> {len(new)} tokens"
    return f"vocabulary: the tokenizer maps tokens to other ids ({len(old)} tokens each)"


class CausalLMTask(Task):
    """Next-token prediction on fixed-length blocks: packed from raw text, or cut from prepared data."""

    def __init__(self, job: ResolvedJob, worker: WorkerInfo, job_root: str) -> None:
        super().__init__(job, worker, job_root)
        location = prepared_location(job.training.data, job.training.checkpoint.endpoint_url)
        text = self._init_raw() if location is None else self._init_prepared(location)
        self._tokenizer_text = text
        self.vocab_size = tokenizer_from_json(text).get_vocab_size()

    def _init_raw(self) -> str:
        """Small corpora: every rank reads the text and packs it into blocks in memory."""
        train_docs, val_docs = read_splits(self.job, with_labels=False)
        text = self._tokenizer_json([d.text for d in train_docs])
        tokenizer = tokenizer_from_json(text)
        eos = tokenizer.token_to_id(EOS) if tokenizer.token_to_id(EOS) is not None else 0
        seq_len = self.job.training.data.seq_len
        self.train_data: PackedBlocks | LMSamples = PackedBlocks(pack_blocks(train_docs, tokenizer, seq_len, eos))
        self.val_data: PackedBlocks | LMSamples = PackedBlocks(pack_blocks(val_docs, tokenizer, seq_len, eos))
        return text

    def _init_prepared(self, location: str) -> str:
        """Prepared data: windows by global index; the tokenizer is the dataset's (hash-checked)."""
        data, endpoint = self.job.training.data, self.job.training.checkpoint.endpoint_url
        dataset = open_dataset(location, data, endpoint, "causal_lm")
        validation = validation_dataset(data, endpoint, "causal_lm")
        n = dataset.num_samples(data.seq_len)
        if validation is None:
            train_split, val_split = tail_splits(n, data.validation_fraction)
        else:
            train_split, val_split = Split(n, 0, n), Split(validation.num_samples(data.seq_len), 0,
                                                           validation.num_samples(data.seq_len))
        self.train_data = LMSamples(dataset, train_split, data.seq_len)
        self.val_data = LMSamples(validation or dataset, val_split, data.seq_len)
        text = (dataset.tokenizer_dir() / "tokenizer.json").read_text(encoding="utf-8")
        pretrained = self._pretrained_dir()
        if pretrained is not None:
            check_same_vocabulary(dataset, pretrained, "the tokenizer of training.model.pretrained")
            check_model_vocab_size(pretrained, tokenizer_from_json(text).get_vocab_size())
        if self.worker.is_main:
            self._save_tokenizer(text)
        return text

    def validation_texts(self, count: int) -> list[str]:
        """Raw text: the validation documents; prepared data: its validation windows, decoded."""
        if not isinstance(self.val_data, LMSamples):
            return super().validation_texts(count)
        indices = first_indices(self.val_data, count)
        rows = self.val_data.batch(indices)["input_ids"].tolist() if indices else []
        return tokenizer_from_json(self._tokenizer_text).decode_batch(rows, skip_special_tokens=True)

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
            elif storage.exists(saved):  # a resumed job keeps its tokenizer
                text = storage.read_bytes(saved).decode("utf-8")
            else:
                text = train_bpe(texts, self.job.training.data.tokenizer_vocab_size).to_str()
            self._save_tokenizer(text)
        return broadcast_object(text)

    def _save_tokenizer(self, text: str) -> None:
        """Save the tokenizer beside the checkpoints (atomic; for resume and export), unless committed
        checkpoints were trained with another vocabulary."""
        from training.checkpoint.storage import join_uri, storage_for

        storage = storage_for(self.job_root, endpoint_url=self.job.training.checkpoint.endpoint_url)
        saved = join_uri(self.job_root, "tokenizer.json")
        self._refuse_other_vocabulary(storage, saved, text)
        storage.write_bytes(saved, text.encode("utf-8"))

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
        """Blocks of `seq_len` tokens in the training split."""
        return len(self.train_data)

    def build_model(self) -> "nn.Module":
        import torch

        from training.models.build import build_causal_lm
        from training.models.sharded import sharded_construction

        model_cfg = self.job.training.model
        torch.manual_seed(self.job.training.seed)
        if self.job.training.compression and self.job.training.compression.distill:
            raise ConfigError("compression.distill supports sequence-classification models in this version")
        pretrained = self._pretrained_dir() if model_cfg.pretrained else None  # downloaded before sharding
        with sharded_construction(self.job, wrap_modules=bool(model_cfg.factory)):
            if model_cfg.factory:
                model, self.loss_fn = user_model(self.job, self.vocab_size)
                return model
            if pretrained is not None:
                from transformers import AutoModelForCausalLM

                return AutoModelForCausalLM.from_pretrained(pretrained, **model_cfg.overrides)
            return build_causal_lm(model_cfg, vocab_size=self.vocab_size)

    def train_batch(self, indices: list[int], step: int) -> dict[str, "torch.Tensor"]:
        log_samples(self.worker.rank, step, self.train_data.global_ids(indices))
        return self.train_data.batch(indices)

    def loss(self, engine: Any, batch: dict[str, "torch.Tensor"]) -> "torch.Tensor":
        outputs = engine(**batch)
        return self.loss_fn(outputs, batch) if self.loss_fn else outputs.loss

    def evaluate(self, engine: Any) -> dict[str, float]:
        """Mean token loss and perplexity over every rank's equal share of the validation blocks."""
        import torch

        t = self.job.training
        batches = equal_shares(len(self.val_data), self.worker.rank, self.worker.world,
                               self.job.layout.micro, t.eval.max_batches)
        loss_sum = 0.0
        with torch.no_grad():
            for indices in batches:
                batch = {k: v.to(engine.device) for k, v in self.val_data.batch(indices).items()}
                loss_sum += self.loss(engine, batch).float().item() * len(indices)
        total, count = all_reduce_sum([loss_sum, float(sum(len(b) for b in batches))])
        loss = total / max(count, 1.0)
        return {"eval_loss": loss, "perplexity": math.exp(min(loss, 50.0))}

    def describe(self) -> dict[str, Any]:
        return {"train_samples": self.train_size, "validation_samples": len(self.val_data),
                "tokens_per_sample": self.job.training.data.seq_len,
                "prepared": isinstance(self.train_data, LMSamples)}
