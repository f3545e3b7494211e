"""The checkpoint upload process yields to training: idle CPU class, idle I/O class, nice.

What the kernel reports for the real upload process is read from outside it, the way `ps` and
`ionice -p` do: /proc/<pid>/task/<tid>/stat (field 19 nice, field 41 scheduling policy) and
ioprio_get(2). Its uploads still hash what they send and still report failures.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from training.checkpoint import commit as protocol
from training.checkpoint.storage import LocalStorage
from training.checkpoint.uploader import IOPRIO_CLASS_IDLE, UploadProcess, get_ioprio

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHED_IDLE = 5  # Linux include/uapi/linux/sched.h


def thread_stat(pid: int, tid: int) -> tuple[int, int]:
    """(nice, scheduling policy) of one thread, from /proc/<pid>/task/<tid>/stat."""
    text = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
    return int(fields[18 - 2]), int(fields[40 - 2])


def threads(pid: int) -> list[int]:
    return sorted(int(task.name) for task in Path(f"/proc/{pid}/task").iterdir())


def stage(directory: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    return directory


def job(root: str, staged: Path, step: int = 5) -> dict[str, Any]:
    return {"root": root, "step": step, "rank": 0, "world": 1, "token": uuid.uuid4().hex,
            "staged_dir": os.fspath(staged), "rng": {"seed": 1}}


@pytest.fixture
def uploads() -> Iterator[UploadProcess]:
    process = UploadProcess({"endpoint_url": None, "rank": 0, "niceness": 10, "s3_options": None})
    yield process
    process.close()


def test_the_upload_process_runs_in_the_idle_cpu_and_io_classes(uploads: UploadProcess, tmp_path: Path) -> None:
    staged = stage(tmp_path / "staged", {"shard-0.bin": os.urandom(1024 * 1024)})
    uploads.submit(job(os.fspath(tmp_path / "store"), staged))
    assert uploads.reply("uploaded")["ok"]
    pid = uploads.pid
    assert pid is not None
    for tid in threads(pid):
        assert thread_stat(pid, tid) == (10, SCHED_IDLE)
        assert get_ioprio(tid) == (IOPRIO_CLASS_IDLE, 0)
    assert thread_stat(os.getpid(), os.getpid())[1] != SCHED_IDLE, "the trainer itself must keep its priority"


def test_threads_the_upload_process_starts_inherit_its_priority() -> None:
    """boto3's transfer threads start after `lower_priority`: Linux copies the settings to them."""
    code = textwrap.dedent("""
        import json, os, sys, threading
        sys.path.insert(0, sys.argv[1])
        from training.checkpoint.uploader import get_ioprio, lower_priority
        refused = lower_priority(7)
        seen = {}
        def report():
            tid = threading.get_native_id()
            seen.update(policy=os.sched_getscheduler(tid), nice=os.getpriority(os.PRIO_PROCESS, tid),
                        io=get_ioprio(tid))
        worker = threading.Thread(target=report)
        worker.start()
        worker.join()
        print(json.dumps({"refused": refused, **seen}))
    """)
    child = subprocess.run([sys.executable, "-c", code, os.fspath(REPO_ROOT)], capture_output=True, text=True,
                           timeout=60)
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout) == {"refused": [], "policy": SCHED_IDLE, "nice": 7, "io": [IOPRIO_CLASS_IDLE, 0]}


def test_a_refused_setting_is_reported_and_the_others_still_apply() -> None:
    """A seccomp filter or another OS may refuse the idle classes; the uploader still runs, niced."""
    code = textwrap.dedent("""
        import json, os, sys
        sys.path.insert(0, sys.argv[1])
        from training.checkpoint import uploader
        def refuse(*args):
            raise PermissionError(1, "Operation not permitted")
        os.sched_setscheduler = refuse
        uploader._IOPRIO_SYSCALLS = {}
        print(json.dumps({"refused": uploader.lower_priority(4), "nice": os.getpriority(os.PRIO_PROCESS, 0)}))
    """)
    child = subprocess.run([sys.executable, "-c", code, os.fspath(REPO_ROOT)], capture_output=True, text=True,
                           timeout=60)
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    assert result["nice"] == 4
    assert [what.split(":")[0] for what in result["refused"]] == ["SCHED_IDLE", "idle I/O class"]
    assert "no ioprio system call number known" in result["refused"][1]


def test_niceness_zero_leaves_the_upload_process_at_the_trainers_priority(tmp_path: Path) -> None:
    process = UploadProcess({"endpoint_url": None, "rank": 0, "niceness": 0, "s3_options": None})
    try:
        process.submit(job(os.fspath(tmp_path / "store"), stage(tmp_path / "staged", {"a.bin": b"a"})))
        assert process.reply("uploaded")["ok"]
        assert process.pid is not None
        assert thread_stat(process.pid, process.pid) == thread_stat(os.getpid(), os.getpid())
    finally:
        process.close()


def test_uploaded_files_are_recorded_with_the_sha256_of_their_bytes(uploads: UploadProcess, tmp_path: Path) -> None:
    files = {"shard-0.bin": os.urandom(3 * 1024 * 1024 + 1), "sub/model.bin": b"", "rank-0.pt": b"rng"}
    root = os.fspath(tmp_path / "store")
    sent = job(root, stage(tmp_path / "staged", files))
    uploads.submit(sent)
    assert uploads.reply("uploaded")["ok"]
    marker = protocol.read_markers(LocalStorage(), root, 5, sent["token"])[0]
    expected = [{"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                for name, data in sorted(files.items())]
    assert marker["files"] == expected
    for name, data in files.items():
        assert (tmp_path / "store" / "step-5" / name).read_bytes() == data


def test_a_failed_upload_is_still_reported_to_the_trainer_and_in_the_marker(
    uploads: UploadProcess, tmp_path: Path
) -> None:
    staged = stage(tmp_path / "staged", {"shard-0.bin": b"x" * 1000})
    (staged / "shard-1.bin").symlink_to(tmp_path / "deleted-before-the-upload")
    root = os.fspath(tmp_path / "store")
    sent = job(root, staged)
    uploads.submit(sent)
    reply = uploads.reply("uploaded")
    assert not reply["ok"] and "shard-1.bin" in reply["error"]
    marker = protocol.read_markers(LocalStorage(), root, 5, sent["token"])[0]
    assert marker["error"] == reply["error"]
    assert not staged.exists(), "the staged copy is removed even when the upload fails"
