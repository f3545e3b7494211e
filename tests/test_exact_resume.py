"""Exact resume: a 2-rank DeepSpeed job SIGKILLed mid-run and submitted again ends bit-identical.

For each precision / ZeRO layout, one job runs uninterrupted to `MAX_STEPS`; a second job with
the same spec is SIGKILLed (one worker, at a step drawn at random) and then restarted the way a
Kubernetes Job controller restarts a failed pod: `dlaunch submit` again, which resumes from the
newest verified checkpoint. Every tensor of the two final checkpoints (module weights, fp32
master weights, Adam moments, scheduler, RNG, sampler) must be `torch.equal`.

Checkpoints go to the real S3 server of `tests/s3server.py` (both bf16 layouts) or to a local
path (fp32). Five kill points in all; `DLAUNCH_KILL_SEED` draws other ones (the seed is in each test id).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import BF16_TEST_MODEL, REPO, base_spec
from tests.s3server import SeaweedS3, s3_server  # noqa: F401  (s3_server is a fixture)
from training.engine.shm_allreduce import usable_cpus

pytestmark = pytest.mark.slow

MAX_STEPS = 8
EVERY_STEPS = 2
KILL_SEED = int(os.environ.get("DLAUNCH_KILL_SEED", "8"))
JOB_TIMEOUT_S = 240
# (precision, ZeRO stage, kills, storage): five kill points in all, each layout at least once.
LAYOUTS = {"fp32-zero2": ("fp32", 2, 2, "local"), "bf16-zero2": ("bf16", 2, 1, "s3"),
           "bf16-zero3": ("bf16", 3, 2, "s3")}


@dataclass
class Job:
    """One job of a test: its spec file, where its checkpoints go, and the environment to run it in."""

    name: str
    spec: Path
    runs: Path
    checkpoint_uri: str
    endpoint_url: str | None
    env: dict[str, str]

    @property
    def run_dir(self) -> Path:
        return self.runs / self.name

    @property
    def checkpoints(self) -> str:
        from training.checkpoint.manager import checkpoints_uri

        return checkpoints_uri(self.checkpoint_uri, self.name)


def kill_plan(name: str, kills: int) -> list[tuple[int, int]]:
    """(step after which to kill, rank to kill), steps increasing, each after the first checkpoint."""
    rng = random.Random(f"{KILL_SEED}-{name}")
    steps = sorted(rng.sample(range(EVERY_STEPS + 1, MAX_STEPS), kills))
    return [(step, rng.randrange(2)) for step in steps]


def make_job(tmp: Path, name: str, precision: str, stage: int, checkpoint_uri: str,
             server: SeaweedS3 | None) -> Job:
    spec = base_spec()
    spec["name"] = name
    spec["resources"] = {"nodes": 1, "gpus_per_node": 2}  # one torchrun agent, two ranks
    checkpoint = {"uri": checkpoint_uri, "every_steps": EVERY_STEPS, "keep_last": 2}
    if server is not None:
        checkpoint["endpoint_url"] = server.endpoint_url
    if precision == "bf16":
        spec["training"]["model"] = BF16_TEST_MODEL
    spec["training"].update({
        "max_steps": MAX_STEPS,
        "precision": precision,
        "zero": {"stage": stage},
        "data": {**spec["training"]["data"], "seq_len": 32},
        "batch": {"global": 8, "micro": 4},
        "optimizer": {"lr": 3e-3},
        "schedule": {"warmup_steps": 2},
        "eval": {"every_steps": 100, "max_batches": 1},
        "checkpoint": checkpoint,
        "tracking": {"wandb": None},
    })
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    env = {**os.environ, **(server.env() if server is not None else {})}
    return Job(name, path, tmp / "runs", checkpoint_uri, spec["training"]["checkpoint"].get("endpoint_url"), env)


def submit(job: Job) -> subprocess.Popen[bytes]:
    """`dlaunch submit` as its own process, as a user (or a Job controller) would run it."""
    log = (job.runs.parent / "submit.log").open("ab")
    command = [sys.executable, "-m", "launcher.cli", "submit", str(job.spec), "--runs-dir", str(job.runs)]
    return subprocess.Popen(command, cwd=REPO, env=job.env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def events(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def worker_pid(job_file: Path, rank: int) -> int | None:
    """The pid of the `training.run` worker of this job with RANK=`rank`, found through /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"training.run" in cmdline and str(job_file).encode() in cmdline and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def run_to_end(job: Job, kills: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """Submit; SIGKILL a worker after each planned step and submit again. One record per attempt."""
    attempts: list[dict[str, Any]] = []
    for kill_step, rank in [*kills, (None, None)]:
        seen, committed = len(events(job.run_dir)), latest_committed(job)
        process = submit(job)
        attempt = {"committed_at_start": committed, "killed_after": kill_step, "rank": rank}
        attempts.append(attempt)
        if kill_step is None:
            assert process.wait(JOB_TIMEOUT_S) == 0, (job.runs.parent / "submit.log").read_text()[-3000:]
        else:
            wait_for_train_step(job.run_dir, seen, kill_step, process)
            os.kill(worker_pid(job.run_dir / "job.json", rank), signal.SIGKILL)
            attempt["committed_at_kill"] = latest_committed(job)
            assert process.wait(JOB_TIMEOUT_S) != 0
        new = events(job.run_dir)[seen:]
        attempt["resumed_at"] = next((e["step"] for e in new if e["event"] == "resume"), 0)
        attempt["steps"] = [e["step"] for e in new if e["event"] == "train"]
    return attempts


def wait_for_train_step(run_dir: Path, seen: int, step: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not any(e["event"] == "train" and e["step"] == step for e in events(run_dir)[seen:]):
        assert process.poll() is None, f"the job ended before step {step}"
        assert time.monotonic() < deadline, f"step {step} not reached in {JOB_TIMEOUT_S} s"
        time.sleep(0.05)


def latest_committed(job: Job) -> int | None:
    from training.checkpoint.manager import latest_step

    return latest_step(job.checkpoints, endpoint_url=job.endpoint_url)


def checkpoint_state(job: Job, tmp: Path, step: int = MAX_STEPS) -> dict[str, Any]:
    """Every file of one of the job's checkpoints (the final one by default), fetched, verified, loaded.

    The worker seeds torch but not Python's or NumPy's global generators, and training draws from
    neither, so those two differ between any two independent runs and are left out here; that
    they are saved and restored exactly is checked in test_checkpoint_protocol.
    """
    import torch

    from training.checkpoint import commit as protocol
    from training.checkpoint.storage import join_uri, storage_for

    storage = storage_for(job.checkpoints, endpoint_url=job.endpoint_url)
    manifest = protocol.read_json(storage, join_uri(protocol.step_uri(job.checkpoints, step), "manifest.json"))
    local = tmp / f"{job.name}-step-{step}"
    assert protocol.fetch_verified(storage, job.checkpoints, step, manifest, local) is None
    state = {entry["path"]: torch.load(local / entry["path"], weights_only=False, map_location="cpu")
             for entry in manifest["files"]}
    for rank in range(2):
        for unseeded in ("python", "numpy"):
            del state[f"rank-{rank}.pt"]["rng"][unseeded]
    return state


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Paths at which two loaded checkpoints differ: tensors by `torch.equal`, the rest by `==`."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        return [] if same else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where} keys {sorted(map(str, a.keys() ^ b.keys()))}"]
        return [d for key in a for d in differences(a[key], b[key], f"{where}/{key}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where} length"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    if type(a) is type(b) and hasattr(a, "__dict__") and not isinstance(a, type):  # e.g. DeepSpeed's loss scaler
        return differences(vars(a), vars(b), where)
    return [] if a == b else [where]


def tensor_count(value: Any) -> int:
    import torch

    if isinstance(value, torch.Tensor):
        return 1
    if isinstance(value, dict):
        return sum(tensor_count(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_count(v) for v in value)
    return 0


@pytest.mark.parametrize("layout", list(LAYOUTS), ids=lambda name: f"{name}-{LAYOUTS[name][3]}-seed{KILL_SEED}")
def test_killed_and_resubmitted_job_ends_bit_identical(tmp_path: Path, layout: str, request: pytest.FixtureRequest,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    precision, stage, kills, storage = LAYOUTS[layout]
    server: SeaweedS3 | None = request.getfixturevalue("s3_server") if storage == "s3" else None
    for name, value in (server.env() if server is not None else {}).items():
        monkeypatch.setenv(name, value)  # this process reads the checkpoints too
    base = f"s3://{server.create_bucket()}/runs" if server is not None else str(tmp_path / "ckpt")
    reference = make_job(tmp_path / "reference", "reference", precision, stage, base, server)
    interrupted = make_job(tmp_path / "interrupted", "interrupted", precision, stage, base, server)
    run_to_end(reference, [])
    if usable_cpus() >= 2 and os.environ.get("DLAUNCH_SHM_ALLREDUCE") != "0":  # one machine, two ranks: both
        # jobs sum through shared memory, and resume exactly on it
        assert "through shared memory" in (reference.runs / "reference" / "logs" / "rank-0.log").read_text()
    attempts = run_to_end(interrupted, kill_plan(layout, kills))
    print(json.dumps(attempts))

    for before, after in zip(attempts, attempts[1:]):
        # The restart resumes from the newest committed checkpoint, which holds everything that
        # was committed when the worker died: at most one interval plus one upload is lost.
        assert after["resumed_at"] == (after["committed_at_start"] or 0)
        assert after["resumed_at"] >= (before["committed_at_kill"] or 0)
        assert before["killed_after"] - after["resumed_at"] <= 2 * EVERY_STEPS
        assert after["steps"][0] == after["resumed_at"] + 1
    assert attempts[-1]["steps"][-1] == MAX_STEPS

    expected = checkpoint_state(reference, tmp_path)
    actual = checkpoint_state(interrupted, tmp_path)
    assert sorted(actual) == sorted(expected)
    assert {"rank-0.pt", "rank-1.pt"} <= set(actual)
    assert tensor_count(actual) > 20
    assert differences(actual, expected) == []
    # The comparison can fail: one interval earlier, the same run differs.
    assert differences(checkpoint_state(reference, tmp_path, MAX_STEPS - EVERY_STEPS), expected)
