"""How `python -m training.run` leaves: its exit code, and the process group torn down first.

The integration test `test_worker_configuration_error_fails_fast_with_logs` saw the exit code 78
turn into SIGABRT in 8 of 65 two-rank runs here while the group was left to the interpreter's
shutdown, and in 0 of 40 once `main` destroyed it. These check `main` itself in this process, with
`train` replaced: each joins a real gloo group of one, as a worker does, and then ends its way.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch.distributed as dist

from tests.conftest import resolved
from tests.test_tasks import SMALL_LM
from training import exitcodes
from training import run as worker
from training.errors import ConfigError


@pytest.fixture
def job_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The job JSON `submit` would write; `main` disables the collector, which is restored after."""
    monkeypatch.delenv("DLAUNCH_LOG_DIR", raising=False)
    path = tmp_path / "job.json"
    path.write_text(resolved(tmp_path, **SMALL_LM).model_dump_json(by_alias=True))
    was_enabled = gc.isenabled()
    yield path
    if dist.is_initialized():
        dist.destroy_process_group()
    (gc.enable if was_enabled else gc.disable)()


def joining_then(tmp_path: Path, outcome: BaseException | int):  # type: ignore[no-untyped-def]
    """A stand-in for `training.run.train`: join a gloo group of one, then raise or return."""

    def train(job) -> int:  # type: ignore[no-untyped-def]
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return train


@pytest.mark.parametrize("returned", [0, exitcodes.PREEMPTED])
def test_a_finished_worker_leaves_its_process_group(tmp_path: Path, job_file: Path, returned: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "train", joining_then(tmp_path, returned))
    assert worker.main([str(job_file)]) == returned
    assert not dist.is_initialized()


def test_a_configuration_error_exits_78_after_leaving_the_group(tmp_path: Path, job_file: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "train", joining_then(tmp_path, ConfigError("data.seq_len: too long")))
    assert worker.main([str(job_file)]) == exitcodes.CONFIG_ERROR
    assert not dist.is_initialized()


def test_any_other_failure_propagates_to_exit_1(tmp_path: Path, job_file: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Retriable: the traceback reaches the rank log. The group is not torn down on this path
    (torch's `destroy_process_group` notes that ncclCommAbort was a collective call in some NCCL
    versions, and a failed peer would never join it)."""
    monkeypatch.setattr(worker, "train", joining_then(tmp_path, ValueError("a library's own ValueError")))
    with pytest.raises(ValueError, match="a library's own"):
        worker.main([str(job_file)])
    assert dist.is_initialized()


def test_an_unreadable_job_is_a_configuration_error(tmp_path: Path, job_file: Path) -> None:
    job_file.write_text("{not json")
    assert worker.main([str(job_file)]) == exitcodes.CONFIG_ERROR
    assert not dist.is_initialized()
