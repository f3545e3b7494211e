"""The causal-LM task: tokenizer, packed train/validation blocks and the model, on every rank."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.config import ResolvedJob
from training.data.lm import pack_blocks, split_documents
from training.data.sources import read_documents
from training.data.tokenizer import EOS, tokenizer_from_json, train_bpe
from training.distributed import WorkerInfo, broadcast_object
from training.models.build import build_causal_lm

if TYPE_CHECKING:
    import torch


@dataclass
class LMData:
    train: "torch.Tensor"
    validation: "torch.Tensor"
    vocab_size: int
    tokenizer_json: str


def _tokenizer_json(job: ResolvedJob, worker: WorkerInfo, train_texts: list[str], saved: Path) -> str:
    """Rank 0 loads the job's saved tokenizer or trains one; every rank receives the same."""
    text = None
    if worker.is_main:
        if saved.is_file():
            text = saved.read_text(encoding="utf-8")
        else:
            text = train_bpe(train_texts, job.training.data.tokenizer_vocab_size).to_str()
            saved.parent.mkdir(parents=True, exist_ok=True)
            tmp = saved.with_name(saved.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(saved)
    return broadcast_object(text)


def load_lm_data(job: ResolvedJob, worker: WorkerInfo, job_root: Path) -> LMData:
    """Read, split, tokenize and pack the spec's data (tokenizer kept at `<job_root>/tokenizer.json`)."""
    data = job.training.data
    docs = read_documents(data.train, data.text_field)
    if data.validation:
        train_docs, val_docs = docs, read_documents(data.validation, data.text_field)
    else:
        train_docs, val_docs = split_documents(docs, data.validation_fraction, job.training.seed)
    tokenizer = tokenizer_from_json(_tokenizer_json(job, worker, [d.text for d in train_docs],
                                                    job_root / "tokenizer.json"))
    eos = tokenizer.token_to_id(EOS)
    return LMData(
        train=pack_blocks(train_docs, tokenizer, data.seq_len, eos),
        validation=pack_blocks(val_docs, tokenizer, data.seq_len, eos),
        vocab_size=tokenizer.get_vocab_size(),
        tokenizer_json=tokenizer.to_str(),
    )


def build_model(job: ResolvedJob, vocab_size: int) -> Any:
    """The causal LM, initialised identically on every rank from the job's seed."""
    import torch

    torch.manual_seed(job.training.seed)
    return build_causal_lm(job.training.model, vocab_size=vocab_size)
