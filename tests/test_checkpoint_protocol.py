"""The checkpoint commit protocol, on local disk and on a real S3 server (SeaweedFS).

Unit-level cases drive `CheckpointManager` in this process with a small real state: `FileEngine`
writes and reads a few MB of files the way a DeepSpeed engine does. The fault-injection cases
run two real ranks (separate processes in a gloo process group, forked from a server that has
torch loaded already) and really kill things: the S3 server mid-upload, and a rank mid-save,
20 times each. After every fault, `latest` names a complete checkpoint, every manifest ever
written verifies, a fresh reader loads exactly the state of the step it picks, and the next
save commits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import queue
import random
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.s3server import SeaweedS3, s3_server  # noqa: F401  (s3_server is a fixture)
from training.checkpoint import commit as protocol
from training.checkpoint.manager import (
    CheckpointManager,
    checkpoints_uri,
    latest_step,
    list_committed,
)
from training.checkpoint.storage import LocalStorage, S3Options, Storage, join_uri, local_path, storage_for

MiB = 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parents[1]
# Fail fast while the server is down: few retries, a short connect timeout.
FAST_S3 = S3Options(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=4, max_attempts=3,
                    connect_timeout=1, read_timeout=30)  # a just-restarted server on a loaded machine can be slow
# Faults per fault-injection test: each server kill costs a restart (3-5 s), each rank kill a new gang.
SERVER_FAULTS = 10
FAULTS = 12


class FileEngine:
    """Stands in for a DeepSpeed engine: real files whose bytes are fixed by (step, rank).

    Like DeepSpeed, every rank writes its own shard and rank 0 also writes the model file; `load_checkpoint`
    reads them back and records which step's bytes it found.
    """

    def __init__(self, rank: int, shard_bytes: int = 2 * MiB) -> None:
        self.rank, self.shard_bytes = rank, shard_bytes
        self.loaded_step: int | None = None

    def content(self, step: int, name: str) -> bytes:
        block = hashlib.sha256(f"{step}:{name}".encode()).digest()
        return block * (self.shard_bytes // len(block))

    def files(self) -> list[str]:
        return [f"shard-{self.rank}.bin"] + (["model.bin"] if self.rank == 0 else [])

    def save_checkpoint(self, save_dir: str, tag: str, client_state: dict[str, Any], save_latest: bool) -> None:
        directory = Path(save_dir, tag)
        directory.mkdir(parents=True, exist_ok=True)
        for name in self.files():
            (directory / name).write_bytes(self.content(client_state["step"], name))

    def load_checkpoint(self, load_dir: str, tag: str) -> tuple[str, dict[str, Any]]:
        directory = Path(load_dir, tag)
        step = protocol.step_of(tag)
        for name in self.files():
            assert (directory / name).read_bytes() == self.content(step, name), f"{name} of {tag} is not step {step}'s"
        self.loaded_step = step
        return str(directory), {"step": step}


@dataclass
class Backend:
    kind: str
    root: str
    storage: Storage
    env: dict[str, str]


def use_server_env(monkeypatch: pytest.MonkeyPatch, server: SeaweedS3) -> None:
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """An empty checkpoint root on local disk, or in a fresh bucket of the session's S3 server."""
    if request.param == "local":
        root = str(tmp_path / "store" / "job" / "checkpoints")
        return Backend("local", root, LocalStorage(), {})
    server: SeaweedS3 = request.getfixturevalue("s3_server")
    use_server_env(monkeypatch, server)
    root = f"s3://{server.create_bucket()}/job/checkpoints"
    return Backend("s3", root, storage_for(root, s3_options=FAST_S3), server.env())


def manager(backend: Backend, tmp_path: Path, name: str = "writer", **options: Any) -> CheckpointManager:
    settings = {"rank": 0, "world": 1, "keep_last": 3, "keep_best": False, **options}
    return CheckpointManager(backend.root, staging_dir=tmp_path / name, s3_options=FAST_S3, **settings)


def save_steps(checkpoints: CheckpointManager, steps: list[int], metrics: dict[int, float] | None = None) -> None:
    engine = FileEngine(checkpoints.rank)
    for step in steps:
        metric = (metrics or {}).get(step)
        checkpoints.save(engine, step, {"sampler": {"consumed": step * 8}}, {"metric": metric, "wandb_run_id": "run-1"})
    assert checkpoints.close().committed


def flip_byte(backend: Backend, uri: str, offset: int = 1000) -> None:
    """Corrupt one byte of a stored object, as bit rot or a bad copy would."""
    data = bytearray(backend.storage.read_bytes(uri))
    data[offset] ^= 0x01
    if backend.kind == "local":
        local_path(uri).chmod(0o644)  # committed files are read-only
    backend.storage.write_bytes(uri, bytes(data))


def keys(backend: Backend) -> list[str]:
    return backend.storage.list(backend.root)


# ---- commit protocol ---------------------------------------------------------------------------


def test_a_save_commits_a_manifest_of_every_file_then_moves_latest(backend: Backend, tmp_path: Path) -> None:
    save_steps(manager(backend, tmp_path), [4])
    step_dir = join_uri(backend.root, "step-4")
    manifest = json.loads(backend.storage.read_bytes(join_uri(step_dir, "manifest.json")))
    assert [f["path"] for f in manifest["files"]] == ["model.bin", "rank-0.pt", "shard-0.bin"]
    for entry in manifest["files"]:
        stored = backend.storage.read_bytes(join_uri(step_dir, entry["path"]))
        assert (len(stored), hashlib.sha256(stored).hexdigest()) == (entry["size"], entry["sha256"])
    assert manifest["step"] == 4 and manifest["world_size"] == 1 and manifest["sampler"] == {"consumed": 32}
    assert manifest["wandb_run_id"] == "run-1" and set(manifest["rng"]["0"]) >= {"python", "numpy", "torch"}
    assert manifest["timings"]["stage_s"] > 0
    assert backend.storage.read_bytes(join_uri(backend.root, "latest")) == b"step-4\n"
    assert latest_step(backend.root) == 4


def test_save_returns_while_a_separate_process_uploads(backend: Backend, tmp_path: Path) -> None:
    checkpoints = manager(backend, tmp_path)
    checkpoints.save(FileEngine(0), 1, {"sampler": {"consumed": 8}}, {})
    assert checkpoints.last_outcome is None  # not waited for yet
    uploader = checkpoints.upload_pid
    assert uploader is not None and uploader != os.getpid()
    assert Path(f"/proc/{uploader}").exists()
    outcome = checkpoints.close()
    assert outcome is not None and outcome.committed and outcome.step == 1
    assert not Path(f"/proc/{uploader}").exists()  # stopped and reaped


def test_synchronous_save_returns_committed(backend: Backend, tmp_path: Path) -> None:
    checkpoints = manager(backend, tmp_path, async_save=False)
    checkpoints.save(FileEngine(0), 3, {"sampler": {"consumed": 24}}, {})
    assert checkpoints.last_outcome is not None and checkpoints.last_outcome.committed
    assert latest_step(backend.root) == 3
    checkpoints.close()


def test_resume_restores_state_rng_and_sampler_from_the_newest(backend: Backend, tmp_path: Path) -> None:
    import numpy as np
    import torch

    save_steps(manager(backend, tmp_path), [2])
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    saved = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone())
    save_steps(manager(backend, tmp_path), [4])
    random.seed(2), np.random.seed(2), torch.manual_seed(2)

    reader, engine = manager(backend, tmp_path, "reader"), FileEngine(0)
    found = reader.latest()
    assert found is not None and found.step == 4
    assert reader.load(engine, found)["sampler"] == {"consumed": 32}
    assert engine.loaded_step == 4
    assert random.getstate() == saved[0]
    assert (np.random.get_state()[1] == saved[1]).all()
    assert torch.equal(torch.get_rng_state(), saved[2])


def test_a_step_without_manifest_does_not_exist_and_is_removed_after_a_newer_commit(
    backend: Backend, tmp_path: Path
) -> None:
    save_steps(manager(backend, tmp_path), [2])
    for step in (3, 9):  # attempts that died mid-upload: files, even markers, but no manifest
        backend.storage.write_bytes(join_uri(backend.root, f"step-{step}", "shard-0.bin"), b"half")
        backend.storage.write_bytes(join_uri(backend.root, f"step-{step}", "uploaded", "rank-0.json"), b"{}")
    assert latest_step(backend.root) == 2
    assert [c.step for c in list_committed(backend.root)] == [2]
    found = manager(backend, tmp_path, "reader").latest()
    assert found is not None and found.step == 2
    save_steps(manager(backend, tmp_path), [6])
    steps = {key.split("/")[0] for key in keys(backend)}
    assert steps == {"latest", "step-2", "step-6", "step-9"}  # step-9 is newer: it could still be uploading


def test_a_flipped_byte_makes_resume_skip_that_checkpoint_with_a_warning(
    backend: Backend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save_steps(manager(backend, tmp_path), [2, 4])
    flip_byte(backend, join_uri(backend.root, "step-4", "shard-0.bin"))
    reader, engine = manager(backend, tmp_path, "reader"), FileEngine(0)
    with caplog.at_level(logging.WARNING, logger="training.checkpoint.manager"):
        found = reader.latest()
    assert found is not None and found.step == 2
    warning = next(r.getMessage() for r in caplog.records if "damaged" in r.getMessage())
    assert "step-4" in warning and "shard-0.bin does not match its manifest" in warning
    assert "resuming from an older checkpoint" in warning
    reader.load(engine, found)
    assert engine.loaded_step == 2


def test_retention_keeps_the_last_and_the_best(backend: Backend, tmp_path: Path) -> None:
    metrics = {1: 0.5, 2: 0.9, 3: 0.8, 4: 0.7, 5: 0.95}
    save_steps(manager(backend, tmp_path, keep_last=2, keep_best=True), [1, 2, 3, 4, 5], metrics)
    assert [c.step for c in list_committed(backend.root)] == [5, 4, 1]
    assert [c.metric for c in list_committed(backend.root)] == [0.95, 0.7, 0.5]
    assert {key.split("/")[0] for key in keys(backend)} == {"latest", "step-1", "step-4", "step-5"}


def test_a_rank_that_never_uploads_commits_nothing_and_deletes_nothing(backend: Backend, tmp_path: Path) -> None:
    save_steps(manager(backend, tmp_path, keep_last=1), [2])
    lonely = manager(backend, tmp_path, world=2, keep_last=1, commit_timeout_s=0.5)  # rank 1 never shows up
    lonely.save(FileEngine(0), 4, {"sampler": {"consumed": 32}}, {})
    outcome = lonely.close()
    assert outcome is not None and not outcome.committed
    assert "ranks [1] did not upload step-4" in (outcome.error or "")
    assert latest_step(backend.root) == 2
    assert [c.step for c in list_committed(backend.root)] == [2]  # keep_last=1, yet step 2 stays


def test_saving_a_step_again_replaces_an_earlier_attempt(backend: Backend, tmp_path: Path) -> None:
    save_steps(manager(backend, tmp_path), [2, 4])
    backend.storage.write_bytes(join_uri(backend.root, "step-4", "stale.bin"), b"from a run that resumed earlier")
    save_steps(manager(backend, tmp_path), [4])
    assert "stale.bin" not in backend.storage.list(join_uri(backend.root, "step-4"))
    assert latest_step(backend.root) == 4
    found = manager(backend, tmp_path, "reader").latest()
    assert found is not None and found.step == 4


def test_list_committed_describes_each_checkpoint(backend: Backend, tmp_path: Path) -> None:
    before = time.time()
    save_steps(manager(backend, tmp_path), [10, 20], {10: 2.5, 20: 1.5})
    infos = list_committed(backend.root)
    assert [(i.step, i.metric, i.latest) for i in infos] == [(20, 1.5, True), (10, 2.5, False)]
    assert all(i.size_bytes > 4 * MiB and before <= (i.created_at or 0) <= time.time() for i in infos)
    assert infos[0].uri == join_uri(backend.root, "step-20")
    assert list_committed(join_uri(backend.root, "nothing-here")) == []
    assert latest_step(join_uri(backend.root, "nothing-here")) is None


def test_latest_step_falls_back_to_manifests_when_latest_is_stale(backend: Backend, tmp_path: Path) -> None:
    save_steps(manager(backend, tmp_path), [2, 4])
    backend.storage.write_bytes(join_uri(backend.root, "latest"), b"step-3\n")  # names a step that never committed
    assert latest_step(backend.root) == 4


def test_checkpoints_uri() -> None:
    assert checkpoints_uri("s3://bucket/runs", "job-a") == "s3://bucket/runs/job-a/checkpoints"
    assert checkpoints_uri("/ckpt/", "job-a") == "/ckpt/job-a/checkpoints"


# ---- dlaunch checkpoints ---------------------------------------------------------------------------


def checkpoint_spec(backend: Backend, write_spec: Any, name: str = "ckpt-job") -> tuple[Path, str]:
    """A spec whose checkpoint URI is the backend's; returns it and where its checkpoints live."""
    from tests.conftest import base_spec

    spec = base_spec()
    spec["name"] = name
    base = backend.root.rsplit("/job/checkpoints", 1)[0]
    spec["training"]["checkpoint"] = {"uri": base, "endpoint_url": backend.env.get("AWS_ENDPOINT_URL")}
    if spec["training"]["checkpoint"]["endpoint_url"] is None:
        del spec["training"]["checkpoint"]["endpoint_url"]
    return write_spec(spec), checkpoints_uri(base, name)


def test_dlaunch_checkpoints_lists_committed_checkpoints(
    backend: Backend, tmp_path: Path, run_cli: Any, write_spec: Any
) -> None:
    spec_file, root = checkpoint_spec(backend, write_spec)
    writer = CheckpointManager(root, 0, 1, 3, False, staging_dir=tmp_path / "w", s3_options=FAST_S3)
    save_steps(writer, [5, 10], {5: 3.25, 10: 2.5})
    backend.storage.write_bytes(join_uri(root, "step-15", "shard-0.bin"), b"an upload that never finished")

    result = run_cli("checkpoints", str(spec_file), "-o", "json")
    assert result.code == 0, result.err
    listing = json.loads(result.out)
    assert listing["uri"] == root
    rows = listing["checkpoints"]
    assert [(r["step"], r["metric"], r["latest"]) for r in rows] == [(10, 2.5, True), (5, 3.25, False)]
    assert all(r["size_bytes"] > 2 * MiB and 0 <= r["age_s"] < 120 for r in rows)

    table = run_cli("checkpoints", str(spec_file))
    assert table.code == 0
    assert "ckpt-job" in table.out and "2.5000" in table.out and "latest" in table.out and "MiB" in table.out


def test_dlaunch_checkpoints_of_a_job_without_any(backend: Backend, run_cli: Any, write_spec: Any) -> None:
    spec_file, root = checkpoint_spec(backend, write_spec, "fresh-job")
    result = run_cli("checkpoints", str(spec_file))
    assert result.code == 0
    assert "fresh-job has no committed checkpoints" in result.out.replace("\n", "")


@pytest.mark.slow
def test_dlaunch_checkpoints_names_a_missing_bucket(
    s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch, run_cli: Any, write_spec: Any
) -> None:
    use_server_env(monkeypatch, s3_server)
    from tests.conftest import base_spec

    spec = base_spec()
    spec["training"]["checkpoint"] = {"uri": "s3://no-such-bucket-here/runs", "endpoint_url": s3_server.endpoint_url}
    result = run_cli("checkpoints", str(write_spec(spec)))
    assert result.code == 1
    assert "cannot list the checkpoints of job unit-job at s3://no-such-bucket-here/runs/unit-job/checkpoints" in (
        result.err.replace("\n", ""))
    assert "bucket 'no-such-bucket-here' does not exist" in result.err.replace("\n", "")


# ---- exit and process lifetime (real processes) ---------------------------------------------------

EXITING_TRAINER = """
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    from tests.test_checkpoint_protocol import FAST_S3, FileEngine
    from training.checkpoint.manager import CheckpointManager
    world = 2 if sys.argv[5] == "hang" else 1  # rank 1 never comes: the commit waits until killed
    checkpoints = CheckpointManager(sys.argv[2], 0, world, 3, False, staging_dir=sys.argv[3], s3_options=FAST_S3)
    checkpoints.save(FileEngine(0, int(sys.argv[4])), 7, {"sampler": {"consumed": 56}}, {})
    print(checkpoints.upload_pid, flush=True)
    if sys.argv[5] == "hang":
        time.sleep(60)
"""


def trainer_process(backend: Backend, tmp_path: Path, shard_bytes: int, then: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(EXITING_TRAINER), str(REPO_ROOT), backend.root, str(tmp_path / "s"),
         str(shard_bytes), then],
        cwd=REPO_ROOT, env={**os.environ, **backend.env}, stdout=subprocess.PIPE, text=True)


def test_exit_without_close_still_commits_the_last_save(backend: Backend, tmp_path: Path) -> None:
    trainer = trainer_process(backend, tmp_path, 2 * MiB, "exit")
    assert trainer.wait(60) == 0
    assert latest_step(backend.root) == 7


def test_a_killed_trainer_takes_its_upload_process_along(backend: Backend, tmp_path: Path) -> None:
    trainer = trainer_process(backend, tmp_path, 4 * MiB, "hang")
    uploader = int(trainer.stdout.readline())
    trainer.kill()
    trainer.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{uploader}").exists() and "Z" not in Path(f"/proc/{uploader}/stat").read_text().split()[2]:
        assert time.monotonic() < deadline, "the upload process outlived its trainer"
        time.sleep(0.05)
    assert latest_step(backend.root) is None


# ---- fault injection: two real ranks, real kills ----------------------------------------------------


def rank_main(rank: int, port: int, root: str, staging: str, env: dict[str, str], events: Any,
              steps: list[int], shard_bytes: int, pause_s: float) -> None:
    """One rank of a 2-rank gloo job that checkpoints `steps`, reporting to `events` as it goes."""
    os.environ.update(env)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    checkpoints = CheckpointManager(root, rank, 2, keep_last=3, keep_best=False, staging_dir=staging,
                                    s3_options=FAST_S3, commit_timeout_s=30)
    engine = FileEngine(rank, shard_bytes)
    for step in steps:
        events.put(("saving", rank, step, time.monotonic()))
        checkpoints.save(engine, step, {"sampler": {"consumed": step}}, {"metric": None})
        outcome = checkpoints.last_outcome
        if outcome is not None and rank == 0:
            events.put(("outcome", rank, outcome.step, outcome.committed, outcome.error))
        time.sleep(pause_s)
    outcome = checkpoints.close()
    if rank == 0:
        events.put(("outcome", rank, outcome.step, outcome.committed, outcome.error))
    events.put(("done", rank, steps[-1], time.monotonic()))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_processes() -> Any:
    """A multiprocessing context whose children fork from a server that has torch imported already."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "torch.distributed", rank_main.__module__])
    return context


class Ranks:
    """Two rank processes of one job, and the events they report."""

    def __init__(self, context: Any, root: str, staging: Path, env: dict[str, str], steps: list[int],
                 shard_bytes: int, pause_s: float) -> None:
        self.events = context.Queue()
        self.log: list[tuple[Any, ...]] = []
        port = free_port()
        self.processes = [context.Process(target=rank_main, daemon=True, args=(
            rank, port, root, str(staging), env, self.events, steps, shard_bytes, pause_s)) for rank in (0, 1)]
        for process in self.processes:
            process.start()

    def wait_for(self, predicate: Any, timeout: float = 60) -> tuple[Any, ...]:
        """The first event (already seen or new) for which `predicate` holds."""
        deadline = time.monotonic() + timeout
        for event in self.log:
            if predicate(event):
                return event
        while True:
            try:
                event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no such event within {timeout} s; seen {self.log[-6:]}") from None
            self.log.append(event)
            if predicate(event):
                return event

    def kill(self, first: int, gap_s: float) -> None:
        """SIGKILL rank `first`, then the other rank `gap_s` later (as torchrun tears a gang down)."""
        self.processes[first].kill()
        time.sleep(gap_s)
        self.processes[1 - first].kill()
        for process in self.processes:
            process.join(10)

    def outcome(self, step: int) -> tuple[Any, ...]:
        return self.wait_for(lambda e: e[0] == "outcome" and e[2] == step)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Invariants:
    """What must hold after every fault, checked by a reader that shares nothing with the writers.

    `latest` names a complete checkpoint, every manifest ever written verifies against the stored
    bytes, and a fresh reader resumes from a checkpoint whose state it loads exactly. Committed files
    never change, so each (step, attempt) is downloaded and verified once.
    """

    def __init__(self, root: str, tmp_path: Path, shard_bytes: int) -> None:
        self.root, self.tmp_path, self.shard_bytes = root, tmp_path, shard_bytes
        self.storage = storage_for(root, s3_options=FAST_S3)
        self.verified: set[tuple[int, str]] = set()
        self.reader = CheckpointManager(root, 0, 2, 3, False, staging_dir=tmp_path / "reader", s3_options=FAST_S3)

    def check(self) -> int | None:
        """Assert the invariants; returns the step a restarted job would resume from."""
        latest = protocol.read_latest(self.storage, self.root)  # first: its manifest was written before it
        committed = protocol.committed(self.storage, self.root)
        steps = {step for step, _ in committed}
        # `latest` names a listed checkpoint, unless newer ones committed (and retention ran) since.
        assert latest is None or latest in steps or max(steps) > latest, (latest, sorted(steps))
        for step, manifest in committed:
            if (step, manifest["token"]) not in self.verified:
                self._verify(step, manifest)
        found = self.reader.latest()
        assert (found is None) == (not committed)
        if found is None:
            return None
        engine = FileEngine(0, self.shard_bytes)
        assert self.reader.load(engine, found)["sampler"] == {"consumed": found.step}
        assert engine.loaded_step == found.step
        return found.step

    def _verify(self, step: int, manifest: dict[str, Any]) -> None:
        """Every file of a committed checkpoint matches its manifest (unless retention just took it)."""
        assert {"model.bin", "rank-0.pt", "rank-1.pt", "shard-0.bin", "shard-1.bin"} == {
            f["path"] for f in manifest["files"]}
        target = self.tmp_path / "verified" / f"step-{step}"
        problem = protocol.fetch_verified(self.storage, self.root, step, manifest, target)
        still_there = self.storage.isfile(join_uri(self.root, f"step-{step}", "manifest.json"))
        assert problem is None or not still_there, f"committed step {step} does not verify: {problem}"
        self.verified.add((step, manifest["token"]))
        shutil.rmtree(target, ignore_errors=True)


@pytest.mark.slow
def test_s3_server_killed_mid_upload_never_exposes_an_incomplete_checkpoint(
    rank_processes: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(20)
    with SeaweedS3.running(tmp_path / "seaweedfs") as server:
        use_server_env(monkeypatch, server)
        root = f"s3://{server.create_bucket()}/job/checkpoints"
        ranks = Ranks(rank_processes, root, tmp_path / "staging", server.env(), list(range(1, 1000)),
                      shard_bytes=4 * MiB, pause_s=0.1)
        ranks.outcome(1)
        invariants, interrupted = Invariants(root, tmp_path, 4 * MiB), []
        for _ in range(SERVER_FAULTS):
            since = time.monotonic()
            saving = ranks.wait_for(lambda e: e[0] == "saving" and e[1] == 0 and e[3] >= since)
            time.sleep(rng.uniform(0.0, 0.4))
            server.kill()
            time.sleep(rng.uniform(0.0, 0.5))
            server.start()
            restarted = time.monotonic()
            interrupted.append(not ranks.outcome(saving[2])[3])
            invariants.check()
            after = ranks.wait_for(lambda e: e[0] == "saving" and e[1] == 0 and e[3] > restarted)
            step, committed, error = ranks.outcome(after[2])[2:]
            assert committed, f"the first save after the server came back (step {step}) failed: {error}"
        print(f"{sum(interrupted)} of {SERVER_FAULTS} kills interrupted an upload")
        assert sum(interrupted) >= SERVER_FAULTS // 4
        ranks.kill(0, 0.0)


@pytest.mark.slow
def test_a_rank_killed_mid_save_never_exposes_an_incomplete_checkpoint(
    rank_processes: Any, s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(21)
    use_server_env(monkeypatch, s3_server)
    root = f"s3://{s3_server.create_bucket()}/job/checkpoints"
    invariants, resumed, next_step, lost = Invariants(root, tmp_path, 4 * MiB), None, 1, []
    for fault in range(FAULTS):
        steps = list(range(next_step, next_step + 6))
        ranks = Ranks(rank_processes, root, tmp_path / "staging", s3_server.env(), steps, 4 * MiB, pause_s=0.02)
        first = ranks.outcome(steps[0])
        assert first[3], f"the first save after a kill (step {steps[0]}) failed: {first[4]}"
        victim, target = fault % 2, rng.choice(steps[1:4])
        ranks.wait_for(lambda e: e[0] == "saving" and e[1] == victim and e[2] == target)
        time.sleep(rng.uniform(0.0, 0.3))
        ranks.kill(victim, rng.uniform(0.0, 0.2))
        now = invariants.check()
        assert now is not None and now >= steps[0] and (resumed is None or now >= resumed)
        lost.append(now < target)
        resumed, next_step = now, max(steps) + 1
    print(f"{sum(lost)} of {FAULTS} kills lost the save they interrupted")
    assert sum(lost) >= FAULTS // 4
