"""Unit tests of the worker's pieces that need no process group: data, sampler, schedule, commit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.checkpoint import commit as protocol
from training.checkpoint.manager import CheckpointManager
from training.checkpoint.storage import LocalStorage
from training.config import ScheduleConfig
from training.data.lm import pack_blocks, split_documents
from training.data.sampler import ResumableSampler
from training.data.sources import DataError, Document, read_documents
from training.data.tokenizer import EOS, train_bpe
from training.optim import lr_multiplier


def consumed_indices(sampler: ResumableSampler, steps: int) -> list[list[int]]:
    return [sum(sampler.next_step(), []) for _ in range(steps)]


def test_ranks_see_disjoint_samples_covering_each_step() -> None:
    ranks = [ResumableSampler(100, global_batch=8, micro=2, rank=r, world=2, seed=3) for r in range(2)]
    for _ in range(12):
        shares = [sum(s.next_step(), []) for s in ranks]
        assert not set(shares[0]) & set(shares[1])
        assert len(shares[0]) == len(shares[1]) == 4


def test_micro_split_does_not_change_the_samples_of_a_step() -> None:
    a = ResumableSampler(64, global_batch=16, micro=2, rank=1, world=2, seed=9)
    b = ResumableSampler(64, global_batch=16, micro=8, rank=1, world=2, seed=9)
    assert consumed_indices(a, 10) == consumed_indices(b, 10)


def test_resume_continues_the_same_order_mid_epoch() -> None:
    full = ResumableSampler(50, global_batch=4, micro=2, rank=0, world=2, seed=1)
    expected = consumed_indices(full, 30)
    first = ResumableSampler(50, global_batch=4, micro=2, rank=0, world=2, seed=1)
    head = consumed_indices(first, 7)
    second = ResumableSampler(50, global_batch=4, micro=2, rank=0, world=2, seed=1)
    second.load_state_dict(first.state_dict())
    assert head + consumed_indices(second, 23) == expected


def test_each_epoch_is_a_new_permutation() -> None:
    sampler = ResumableSampler(8, global_batch=8, micro=8, rank=0, world=1, seed=0)
    epoch0, epoch1 = sampler.next_step()[0], sampler.next_step()[0]
    assert sorted(epoch0) == sorted(epoch1) == list(range(8))
    assert epoch0 != epoch1


def test_resume_with_another_global_batch_is_refused() -> None:
    sampler = ResumableSampler(50, global_batch=4, micro=2, rank=0, world=2, seed=1)
    with pytest.raises(ValueError, match="global batch 8"):
        sampler.load_state_dict({"consumed": 16, "global_batch": 8})


@pytest.mark.parametrize("decay,at_end", [("cosine", 0.1), ("linear", 0.1), ("constant", 1.0)])
def test_schedule_warms_up_then_decays_to_floor(decay: str, at_end: float) -> None:
    factor = lr_multiplier(ScheduleConfig(warmup_steps=10, decay=decay, min_lr_ratio=0.1), max_steps=110)
    assert factor(0) == pytest.approx(0.1)
    assert factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0)
    assert factor(110) == pytest.approx(at_end)
    if decay == "cosine":
        assert factor(60) == pytest.approx(0.55)


def test_txt_paragraphs_and_jsonl_records_become_documents(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("first para\nline two\n\nsecond para\n")
    (tmp_path / "b.jsonl").write_text('{"text": "json doc", "label": "x"}\n\n{"text": "another"}\n')
    docs = read_documents(str(tmp_path), text_field="text")
    assert [d.text for d in docs] == ["first para line two", "second para", "json doc", "another"]


@pytest.mark.parametrize("content,message", [
    ("{not json}\n", "b.jsonl:1: not valid JSON"),
    ('{"body": "x"}\n', "b.jsonl:1: no field 'text'"),
])
def test_malformed_jsonl_names_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "b.jsonl").write_text(content)
    with pytest.raises(DataError, match=message):
        read_documents(str(tmp_path / "b.jsonl"))


def test_split_is_deterministic_and_disjoint() -> None:
    docs = [Document(text=f"doc {i}") for i in range(40)]
    train, val = split_documents(docs, 0.1, seed=5)
    again = split_documents(docs, 0.1, seed=5)
    assert (train, val) == again
    assert len(val) == 4 and not {d.text for d in train} & {d.text for d in val}


def test_bpe_packs_fixed_length_blocks_with_eos() -> None:
    docs = [Document(text="the quick brown fox jumps over the lazy dog " * 20) for _ in range(5)]
    tokenizer = train_bpe([d.text for d in docs], vocab_size=300)
    eos = tokenizer.token_to_id(EOS)
    blocks = pack_blocks(docs, tokenizer, seq_len=16, eos_id=eos)
    assert blocks.shape[1] == 16 and blocks.shape[0] > 5
    assert (blocks == eos).sum() >= 4


def make_step(root: Path, step: int, content: bytes = b"weights", metric: float | None = None) -> Path:
    """A step directory committed the way rank 0's upload process does it: manifest, then `latest`."""
    step_dir = root / f"step-{step}"
    step_dir.mkdir(parents=True)
    (step_dir / "shard.pt").write_bytes(content)
    size, digest = protocol.hash_file(step_dir / "shard.pt")
    markers = {0: {"files": [{"path": "shard.pt", "size": size, "sha256": digest}], "rng": {}, "seconds": 0.0}}
    manifest = protocol.build_manifest(step, 1, "attempt", markers, {"sampler": {"consumed": step}}, {"metric": metric}, 0.0)
    protocol.commit(LocalStorage(), str(root), manifest)
    return step_dir


def committed_steps(root: Path) -> list[int]:
    return [step for step, _ in protocol.committed(LocalStorage(), str(root))]


def test_checkpoint_without_manifest_does_not_exist(tmp_path: Path) -> None:
    make_step(tmp_path, 10)
    (tmp_path / "step-20").mkdir()
    (tmp_path / "step-20" / "shard.pt").write_bytes(b"half written")
    assert committed_steps(tmp_path) == [10]
    assert (tmp_path / "latest").read_text().strip() == "step-10"


def test_flipped_byte_skips_the_checkpoint_with_a_warning(tmp_path: Path, caplog) -> None:
    make_step(tmp_path, 10)
    newest = make_step(tmp_path, 20)
    shard = newest / "shard.pt"
    data = bytearray(shard.read_bytes())
    data[0] ^= 0xFF
    shard.write_bytes(bytes(data))
    manager = CheckpointManager(str(tmp_path), rank=0, world=1, keep_last=3, keep_best=False)
    assert manager.latest().step == 10
    assert "does not match its manifest" in caplog.text
    manifest = json.loads((newest / "manifest.json").read_text())
    assert "shard.pt does not match" in protocol.verify_dir(newest, manifest)


def test_retention_keeps_last_n_and_the_best(tmp_path: Path) -> None:
    for step, metric in [(1, 0.5), (2, 0.9), (3, 0.8), (4, 0.7)]:
        make_step(tmp_path, step, metric=metric)
    assert protocol.apply_retention(LocalStorage(), str(tmp_path), 4, keep_last=2, keep_best=True) == [2]
    assert sorted(committed_steps(tmp_path)) == [1, 3, 4]
    manifest = json.loads((tmp_path / "step-4" / "manifest.json").read_text())
    assert manifest["files"][0]["path"] == "shard.pt" and manifest["sampler"] == {"consumed": 4}


@pytest.mark.parametrize("codes,expected", [
    ({78}, 78), ({78, 1}, 78), ({75}, 75), ({75, -15}, 75), ({1}, 1), ({75, 1}, 1), ({-9}, 1),
], ids=["config", "config-wins", "preempted", "preempted-and-sigterm", "crash", "mixed", "killed"])
def test_agent_maps_worker_exit_codes(codes: set[int], expected: int) -> None:
    from training.agent import exit_code_for

    assert exit_code_for(codes) == expected
