"""Training reads prepared data (issue 13, items 4 and 6): tasks built on `dlaunch prepare` output.

Verified here, in one process: the causal-LM and classification tasks take their samples by
global index out of a prepared dataset (given as `training.data.prepared` or auto-detected in
`training.data.train`), with the dataset's tokenizer; held-out validation by global index; a
tokenizer that does not match the model is a `ConfigError` before any model is built; raw text
above the limit is refused by `validate` with the `dlaunch prepare` hint, and by the worker.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import base_spec, resolved
from training.config import RAW_TEXT_LIMIT_MB
from training.data.prepare.config import PrepareSpec
from training.data.prepare.reader import PreparedDataset
from training.data.prepare.run import prepare
from training.data.prepared import SAMPLE_LOG_ENV, Split, strided_splits, tail_splits
from training.data.sources import DataError, read_documents
from training.distributed import WorkerInfo
from training.errors import ConfigError
from training.tasks import CausalLMTask, ClassificationTask

REPO = Path(__file__).resolve().parent.parent
TUTORIAL = "/usr/share/doc/python3.11/html/_sources/tutorial"
MINILM = REPO / "data/models/all-MiniLM-L6-v2"
WORKER = WorkerInfo(rank=0, world=1, local_rank=0, device="cpu")
SEQ_LEN = 32


@pytest.fixture(scope="module")
def lm_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lm") / "prepared"
    prepare(PrepareSpec(inputs=[TUTORIAL], output=str(out), engine="inline", shard_mb=0.05,
                        tokenizer={"vocab_size": 600, "sample_mb": 1}), report=lambda line: None)
    return out


def test_causal_lm_reads_windows_of_the_prepared_token_stream(lm_dataset: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SAMPLE_LOG_ENV, str(tmp_path / "samples"))
    job = resolved(tmp_path, data={"prepared": str(lm_dataset), "seq_len": SEQ_LEN, "validation_fraction": 0.1})
    task = CausalLMTask(job, WORKER, str(tmp_path / "root"))
    dataset = PreparedDataset(str(lm_dataset))
    total = dataset.num_samples(SEQ_LEN)
    assert task.train_size + len(task.val_data) == total and len(task.val_data) == round(total * 0.1)
    batch = task.train_batch([0, 5, task.train_size - 1], step=3)
    expected = np.stack([dataset.sample(i, SEQ_LEN)[:SEQ_LEN] for i in (0, 5, task.train_size - 1)])
    assert np.array_equal(batch["input_ids"].numpy(), expected)
    assert batch["labels"] is batch["input_ids"]
    held_out = task.val_data.batch([0])["input_ids"].numpy()[0]
    assert np.array_equal(held_out, dataset.sample(task.train_size, SEQ_LEN)[:SEQ_LEN])
    tokenizer = (lm_dataset / "tokenizer" / "tokenizer.json").read_text()
    assert (tmp_path / "root" / "tokenizer.json").read_text() == tokenizer  # kept for resume and export
    assert task.vocab_size == dataset.manifest["tokenizer"]["vocab_size"]
    logged = [json.loads(line) for line in (tmp_path / "samples" / "rank-0.jsonl").read_text().splitlines()]
    assert logged == [{"step": 3, "ids": [0, 5, task.train_size - 1]}]
    assert task.describe()["prepared"] is True
    # int8 calibration (compression.quantize.keep_float_layers) reads no raw text: the held-out
    # windows, decoded with the dataset's tokenizer, tokenize back to the same ids.
    texts = task.validation_texts(3)
    from tokenizers import Tokenizer

    reencoded = [Tokenizer.from_str(tokenizer).encode(text, add_special_tokens=False).ids for text in texts]
    assert len(texts) == 3 and reencoded[0] == held_out.tolist()


def test_a_prepared_dataset_in_train_is_detected(lm_dataset: Path, tmp_path: Path) -> None:
    job = resolved(tmp_path, data={"train": str(lm_dataset), "seq_len": SEQ_LEN})
    task = CausalLMTask(job, WORKER, str(tmp_path / "root"))
    assert task.describe()["prepared"] is True
    assert task.train_size + len(task.val_data) == PreparedDataset(str(lm_dataset)).num_samples(SEQ_LEN)


def test_prepared_validation_dataset_is_used_whole(lm_dataset: Path, tmp_path: Path) -> None:
    job = resolved(tmp_path, data={"prepared": str(lm_dataset), "validation": str(lm_dataset), "seq_len": SEQ_LEN})
    task = CausalLMTask(job, WORKER, str(tmp_path / "root"))
    assert task.train_size == len(task.val_data) == PreparedDataset(str(lm_dataset)).num_samples(SEQ_LEN)


def test_raw_validation_with_prepared_training_data_is_a_config_error(lm_dataset: Path, tmp_path: Path) -> None:
    job = resolved(tmp_path, data={"prepared": str(lm_dataset), "validation": f"{TUTORIAL}/appendix.rst.txt"})
    with pytest.raises(ConfigError, match="training.data.validation .* is not a prepared dataset"):
        CausalLMTask(job, WORKER, str(tmp_path / "root"))


def test_a_pretrained_model_with_another_tokenizer_is_refused_before_training(lm_dataset: Path,
                                                                            tmp_path: Path) -> None:
    from training.config import ModelConfig
    from training.data.tokenizer import train_bpe
    from training.models.build import build_causal_lm

    model_dir = tmp_path / "model"
    build_causal_lm(ModelConfig(preset="llama-tiny"), vocab_size=700).save_pretrained(model_dir)
    train_bpe(["other text entirely, other merges"] * 50, 700).save(str(model_dir / "tokenizer.json"))
    job = resolved(tmp_path, data={"prepared": str(lm_dataset), "seq_len": SEQ_LEN},
                   model={"type": "causal-lm", "pretrained": str(model_dir)})
    with pytest.raises(ConfigError, match="does not match the tokenizer of training.model.pretrained"):
        CausalLMTask(job, WORKER, str(tmp_path / "root"))


def test_a_dataset_prepared_for_another_task_is_refused(lm_dataset: Path, tmp_path: Path) -> None:
    job = resolved(tmp_path, data={"prepared": str(lm_dataset), "seq_len": SEQ_LEN},
                   model={"type": "sequence-classification", "pretrained": str(MINILM), "num_labels": 3})
    with pytest.raises(ConfigError, match="prepared for task causal_lm, this model needs classification"):
        ClassificationTask(job, WORKER, str(tmp_path / "root"))


def glosses(folder: Path, count: int) -> Path:
    """WordNet noun glosses labelled with their lexicographer file, as JSON lines."""
    records = []
    for line in Path("/usr/share/wordnet/data.noun").read_text(errors="replace").splitlines():
        if " | " in line and not line.startswith("  "):
            fields, gloss = line.split(" | ", 1)
            records.append({"text": gloss.strip(), "label": f"lex{fields.split()[1]}"})
        if len(records) == count:
            break
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "glosses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder / "glosses.jsonl"


def test_classification_reads_prepared_examples_with_labels(tmp_path: Path) -> None:
    source = glosses(tmp_path / "src", 300)
    out = tmp_path / "prepared"
    prepare(PrepareSpec(inputs=[str(source)], output=str(out), engine="inline", task="classification",
                        tokenizer={"pretrained": str(MINILM)}), report=lambda line: None)
    job = resolved(tmp_path, data={"prepared": str(out), "seq_len": 16, "validation_fraction": 0.25},
                   model={"type": "sequence-classification", "pretrained": str(MINILM), "num_labels": 30})
    task = ClassificationTask(job, WORKER, str(tmp_path / "root"))
    dataset = PreparedDataset(str(out))
    assert task.classes == dataset.label_map
    assert task.train_size + len(task.val_set) == dataset.num_examples == 300
    batch = task.train_batch([0, 1], step=0)
    for row, j in enumerate([0, 1]):
        ids, label = dataset.example(task.train_set.split.global_index(j))
        width = min(len(ids), 16)
        assert batch["input_ids"][row, :width].tolist() == [*ids[:width - 1].tolist(), int(ids[-1])]
        assert int(batch["labels"][row]) == label
    texts = task.validation_texts(2)  # int8 calibration: held-out examples (as the model sees them) as text
    first_ids, _ = task.val_set.item(0)
    assert len(texts) == 2 and texts[0] == task.tokenizer.decode(first_ids, skip_special_tokens=True) != ""


def test_classification_data_with_another_tokenizer_is_refused(tmp_path: Path) -> None:
    source = glosses(tmp_path / "src", 100)
    out = tmp_path / "prepared"
    prepare(PrepareSpec(inputs=[str(source)], output=str(out), engine="inline", task="classification",
                        tokenizer={"vocab_size": 400, "sample_mb": 1}), report=lambda line: None)
    job = resolved(tmp_path, data={"prepared": str(out), "seq_len": 16},
                   model={"type": "sequence-classification", "pretrained": str(MINILM), "num_labels": 30})
    with pytest.raises(ConfigError, match="does not match the tokenizer of training.model.pretrained"):
        ClassificationTask(job, WORKER, str(tmp_path / "root"))


@pytest.mark.parametrize("total,fraction", [(7, 0.34), (100, 0.05), (3, 0.49), (1000, 0.1)])
def test_splits_partition_the_global_indices(total: int, fraction: float) -> None:
    for train, validation in (strided_splits(total, fraction), tail_splits(total, fraction)):
        train_ids = [train.global_index(j) for j in range(len(train))]
        val_ids = [validation.global_index(j) for j in range(len(validation))]
        assert sorted(train_ids + val_ids) == list(range(total))
        assert len(val_ids) >= 1 and len(train_ids) >= 1
    assert [Split(10, 2, 3).global_index(j) for j in range(3)] == [2, 3, 4]


def test_spec_needs_train_or_prepared_not_both(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="required: set training.data.train .* or training.data.prepared"):
        resolved(tmp_path, data={"seq_len": SEQ_LEN})
    with pytest.raises(Exception, match="not both"):
        resolved(tmp_path, data={"train": TUTORIAL, "prepared": "s3://bucket/data"})


def big_corpus(folder: Path) -> Path:
    """A sparse file just above the raw-text limit (no disk or time spent on its bytes)."""
    folder.mkdir()
    with open(folder / "big.txt", "wb") as handle:
        handle.truncate(int((RAW_TEXT_LIMIT_MB + 1) * 1e6))
    return folder


def test_validate_refuses_raw_text_above_the_limit_and_names_prepare(run_cli, write_spec, tmp_path: Path) -> None:
    spec = base_spec()
    spec["training"]["data"] = {"train": str(big_corpus(tmp_path / "corpus"))}
    result = run_cli("validate", str(write_spec(spec)))
    assert result.code == 2, result.err
    assert "training.data.train" in result.err and f"above the {RAW_TEXT_LIMIT_MB} MB" in result.err
    assert "dlaunch prepare" in result.err and "training.data.prepared" in result.err


def test_validate_accepts_a_prepared_dataset_in_train(run_cli, write_spec, lm_dataset: Path) -> None:
    spec = base_spec()
    spec["training"]["data"] = {"train": str(lm_dataset)}
    assert run_cli("validate", str(write_spec(spec))).code == 0


def test_the_worker_refuses_raw_text_above_the_limit(tmp_path: Path) -> None:
    folder = big_corpus(tmp_path / "corpus")
    with pytest.raises(DataError, match="dlaunch prepare"):
        read_documents(str(folder))
    assert os.path.getsize(folder / "big.txt") > RAW_TEXT_LIMIT_MB * 1e6


def test_the_local_target_gives_workers_absolute_prepared_and_cache_paths(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths are relative to where dlaunch runs; workers may start elsewhere."""
    from launcher.spec import JobSpec
    from launcher.targets.local.request import localize
    from tests.conftest import base_spec

    monkeypatch.chdir(tmp_path)
    data = base_spec()
    data["training"]["data"] = {"prepared": "data/prepared-docs", "cache_dir": "cache", "seq_len": 64}
    spec = localize(JobSpec.model_validate(data))
    assert spec.training.data.prepared == str(tmp_path / "data" / "prepared-docs")
    assert spec.training.data.cache_dir == str(tmp_path / "cache")
