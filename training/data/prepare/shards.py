"""Work units and shards: a unit is a run of source files; tokenizing it writes one shard.

The units depend only on the sources (sorted, with sizes) and `shard_mb`, so a rerun of a
killed prepare finds the same units, recognises the committed ones by their fingerprint and
redoes only the others. A shard is a megatron-core indexed dataset (`.bin` tokens, `.idx`
sequence lengths, pointers and document boundaries); see docs/data-format.md for the choice.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.data.prepare.sources import BadLines, Record, SourceFile, read_records

SHARDS = "shards"
ENCODE_BATCH = 1024


@dataclass(frozen=True)
class Unit:
    """One shard's worth of input: its name, files and a fingerprint of what makes its content."""

    index: int
    files: tuple[SourceFile, ...]
    fingerprint: str

    @property
    def name(self) -> str:
        return f"{self.index:05d}"


@dataclass(frozen=True)
class ShardJob:
    """Everything a shard task needs besides its unit (sent once per task by the engine)."""

    output: str
    task: str
    text_field: str
    label_field: str
    skip_bad_lines: bool
    tokenizer_json: str
    eos_id: int | None
    dtype: str
    endpoint_url: str | None


def plan_units(sources: list[SourceFile], shard_mb: float, content_key: str) -> list[Unit]:
    """Group consecutive files into units of at least `shard_mb` MB (a larger file is a unit of its own)."""
    limit, units, current, size = shard_mb * 1e6, [], [], 0
    for source in sources:
        current.append(source)
        size += source.size
        if size >= limit:
            units.append(tuple(current))
            current, size = [], 0
    if current:
        units.append(tuple(current))
    return [Unit(i, files, _fingerprint(files, content_key)) for i, files in enumerate(units)]


def _fingerprint(files: tuple[SourceFile, ...], content_key: str) -> str:
    listing = json.dumps([[f.uri, f.size] for f in files] + [content_key])
    return hashlib.sha256(listing.encode()).hexdigest()


def optimal_dtype(vocab_size: int) -> str:
    """uint16 below 65,500 ids (megatron-core's `DType.optimal_dtype` rule), else int32."""
    return "uint16" if vocab_size < 65500 else "int32"


def write_shard(unit: Unit, job: ShardJob) -> dict[str, Any]:
    """Tokenize the unit into a shard, upload it next to the dataset and return its progress record."""
    from training.checkpoint.storage import join_uri, storage_for

    started = time.monotonic()
    storage = storage_for(job.output, endpoint_url=job.endpoint_url)
    with tempfile.TemporaryDirectory(prefix=f"dlaunch-shard-{unit.name}-") as tmp:
        counts, label_names = _build(unit, job, Path(tmp))
        files = {}
        for path in sorted(Path(tmp).iterdir()):
            size, sha = storage.upload_file_hashed(path, join_uri(job.output, SHARDS, path.name))
            files[path.name] = {"size": size, "sha256": sha}
    return {"name": unit.name, "fingerprint": unit.fingerprint, **counts, "label_names": label_names,
            "files": files, "input_bytes": sum(f.size for f in unit.files), "input_files": len(unit.files),
            "seconds": round(time.monotonic() - started, 3)}


def _build(unit: Unit, job: ShardJob, directory: Path) -> tuple[dict[str, Any], list[str]]:
    from tokenizers import Tokenizer

    with warnings.catch_warnings():  # megatron.core warns about optional CUDA extensions at import
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    tokenizer = Tokenizer.from_str(job.tokenizer_json)
    builder = IndexedDatasetBuilder(str(directory / f"{unit.name}.bin"), dtype=np.dtype(job.dtype).type)
    bad, labels, documents, tokens = BadLines(), [], 0, 0
    classify = job.task == "classification"
    # `encode_batch_fast` (huggingface/tokenizers#1587) gives the same ids without computing
    # character offsets, which nothing here reads: about 20% less CPU per batch.
    for batch in _batches(_records(unit, job, bad)):
        encodings = tokenizer.encode_batch_fast([r.text for r in batch], add_special_tokens=classify)
        for record, encoding in zip(batch, encodings):
            ids = encoding.ids if classify else [*encoding.ids, job.eos_id]
            builder.add_document(np.asarray(ids, dtype=job.dtype), [len(ids)])
            documents, tokens = documents + 1, tokens + len(ids)
            labels.append(record.label)
    builder.finalize(str(directory / f"{unit.name}.idx"))
    label_names = sorted(set(labels)) if classify else []
    if classify:
        index = {name: i for i, name in enumerate(label_names)}
        np.save(directory / f"{unit.name}.labels.npy", np.asarray([index[x] for x in labels], dtype=np.int32))
    counts = {"documents": documents, "tokens": tokens, "bad_lines": bad.count, "bad_examples": bad.examples}
    return counts, label_names


def _records(unit: Unit, job: ShardJob, bad: BadLines) -> Iterator[Record]:
    """The unit's documents; empty texts carry no tokens for causal LM and are left out."""
    label_field = job.label_field if job.task == "classification" else None
    for source in unit.files:
        for record in read_records(source, job.text_field, label_field, bad if job.skip_bad_lines else None,
                                   job.endpoint_url):
            if record.text or label_field:
                yield record


def _batches(records: Iterator[Record]) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for record in records:
        batch.append(record)
        if len(batch) == ENCODE_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def unit_to_json(unit: Unit) -> str:
    return json.dumps(asdict(unit))


def unit_from_json(text: str) -> Unit:
    raw = json.loads(text)
    return Unit(raw["index"], tuple(SourceFile(**f) for f in raw["files"]), raw["fingerprint"])
