"""Resume on another world size, in one process: the universal copy's protocol and the loop's resume.

The multi-rank runs (1 and 3 ranks resuming a 2-rank checkpoint) are in `test_resume_world_size.py`.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.test_trainer_units import FakeCheckpoints, make_job, trainer
from training.checkpoint import commit as protocol
from training.checkpoint import universal
from training.checkpoint.errors import CheckpointError
from training.checkpoint.manager import CommittedCheckpoint
from training.checkpoint.storage import LocalStorage
from training.errors import ConfigError


def converted_copy(root: Path, step: int = 2, token: str = "t1") -> dict:
    """A fake converted folder committed under `root` from a checkpoint with `token`."""
    work = root.parent / "work"
    (work / "zero" / "w").mkdir(parents=True)
    (work / "zero" / "w" / "fp32.pt").write_bytes(b"weights")
    (work / "mp_rank_00_model_states.pt").write_bytes(b"model")
    manifest = universal.build_manifest(work, {"step": step, "token": token, "world_size": 2})
    universal.commit_copy(LocalStorage(), str(root), work, manifest)
    return manifest


def test_a_committed_copy_is_reused_only_for_the_checkpoint_it_came_from(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    manifest = converted_copy(root)
    storage = LocalStorage()
    assert {f["path"] for f in manifest["files"]} == {"zero/w/fp32.pt", "mp_rank_00_model_states.pt"}
    assert universal.read_manifest(storage, str(root), {"step": 2, "token": "t1"}) == manifest
    assert universal.read_manifest(storage, str(root), {"step": 2, "token": "rewritten"}) is None
    assert protocol.verify_dir(root / "step-2.universal", manifest) is None
    (root / "step-2.universal" / "zero" / "w" / "fp32.pt").write_bytes(b"damaged")
    assert "does not match" in protocol.verify_dir(root / "step-2.universal", manifest)


def test_the_copy_is_no_checkpoint_and_goes_with_its_original(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    converted_copy(root)
    (root / "step-2").mkdir()
    (root / "step-2" / "manifest.json").write_text("{}")
    storage = LocalStorage()
    assert set(protocol.step_prefixes(storage, str(root))) == {2}
    protocol.delete_checkpoint(storage, str(root), 2)
    assert not (root / "step-2").exists() and not (root / "step-2.universal").exists()


def test_only_per_rank_optimizer_files_need_conversion() -> None:
    zero2 = {"files": [{"path": "mp_rank_00_model_states.pt"}, {"path": "zero_pp_rank_1_mp_rank_00_optim_states.pt"}]}
    ddp = {"files": [{"path": "ddp_state.pt"}, {"path": "rank-0.pt"}]}
    assert universal.needs_conversion(zero2) and not universal.needs_conversion(ddp)


def test_loading_universal_sets_deepspeeds_flag_only_for_the_load() -> None:
    engine = SimpleNamespace(_config=SimpleNamespace(load_universal_checkpoint=False))
    with universal.loading_universal(engine):
        assert engine._config.load_universal_checkpoint is True
    assert engine._config.load_universal_checkpoint is False
    with pytest.raises(CheckpointError, match="world size it was written with"):
        with universal.loading_universal(SimpleNamespace()):
            pass


def test_resume_on_another_world_size_continues_and_logs_both_sizes() -> None:
    checkpoints = FakeCheckpoints()
    checkpoints.saved[2] = ({"sampler": {"consumed": 8, "seed": 1, "global_batch": 4}}, {})
    checkpoints.latest = lambda: CommittedCheckpoint(2, "mem://step-2", {"world_size": 4})  # type: ignore[method-assign]
    loop, tracker = trainer(make_job(), checkpoints=checkpoints)
    loop.resume()
    assert loop.state.step == 2 and loop.sampler.state.consumed == 8
    resume = next(fields for name, fields in tracker.events if name == "resume")
    assert (resume["from_world_size"], resume["world_size"]) == (4, 1)


def test_resume_with_another_global_batch_is_a_config_error() -> None:
    checkpoints = FakeCheckpoints()
    checkpoints.saved[2] = ({"sampler": {"consumed": 24, "seed": 1, "global_batch": 12}}, {})
    loop, _ = trainer(make_job(), checkpoints=checkpoints)
    with pytest.raises(ConfigError, match="global batch 12"):
        loop.resume()


def test_a_step_logs_the_fingerprint_of_its_sample_ids() -> None:
    loop, tracker = trainer(make_job(max_steps=1))
    loop.run()
    step = next(fields for name, fields in tracker.events if name == "train")
    ids = [i for micro in loop.sampler.__class__(loop.sampler.n_samples, 4, 2, 0, 1, loop.sampler.seed).next_step()
           for i in micro]
    assert step["sample_ids"] == [sum(ids), sum(i * i for i in ids)]
