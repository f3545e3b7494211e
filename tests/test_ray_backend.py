"""The Ray Train backend on a local Ray instance: the same training as the DeepSpeed backend,
and a killed Ray worker is restarted by Ray and resumes from the last committed checkpoint.

Verified: real Ray (TorchTrainer, CPU workers, gloo), real DeepSpeed inside Ray workers, real
process kill. Not verified here: a KubeRay cluster (rendering of the RayJob is tested elsewhere;
tests/e2e runs one on kind).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import BF16_TEST_MODEL
from tests.jobs import job_spec, losses, run_job


def test_committed_checkpoints_are_reported_to_ray_as_metrics_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ray checkpoint would be persisted under the run's storage path, which on KubeRay exists
    only on the head pod: a worker pod's report raised "A local path on the head node is not
    accessible by worker nodes". Every rank reports metrics, none a checkpoint."""
    import ray.train

    from training.engine import ray as ray_engine

    calls: list[tuple[tuple, dict]] = []
    monkeypatch.setattr(ray.train, "report", lambda *args, **kwargs: calls.append((args, kwargs)))
    ray_engine.report_checkpoint(40, {"path": "s3://b/run/checkpoints/step-40", "eval_loss": 2.5, "best": True})
    assert calls == [(({"step": 40, "eval_loss": 2.5},), {})]


@pytest.mark.parametrize("worker_errors,expected", [
    ({0: RuntimeError("collective aborted"), 1: "config"}, 78),
    ({0: ValueError("training exited with: configuration error"), 1: RuntimeError("x")}, 1),
], ids=["config-error-on-one-worker", "text-that-only-looks-like-one"])
def test_ray_driver_decides_on_the_workers_exception_types(worker_errors: dict, expected: int) -> None:
    """Ray Train v2 keeps each worker's exception object in `WorkerGroupError.worker_failures`; the
    driver's exit code follows their types. It used to match "configuration error" in the text."""
    from ray.train.v2.api.exceptions import WorkerGroupError

    from training.checkpoint.errors import IncompatibleCheckpointError
    from training.failure import decision_for_workers, exit_code
    from training.ray_entry import failure_causes

    failures = {rank: IncompatibleCheckpointError("model changed") if error == "config" else error
                for rank, error in worker_errors.items()}
    error = WorkerGroupError("worker failures", failures)
    assert exit_code(decision_for_workers(failure_causes(error))) == expected


@pytest.mark.slow
# bf16 only: fp32 equality of the two backends is checked by the distillation test
# (tests/test_distill_export.py), which runs the same job on both.
@pytest.mark.parametrize("stage,precision", [(2, "bf16")])
def test_ray_backend_matches_deepspeed_backend_bit_for_bit(tmp_path: Path, stage: int, precision: str) -> None:
    """Same seed, data, model and ZeRO stage: the DeepSpeed engine inside Ray does the same math."""
    curves = {}
    for backend in ("deepspeed", "ray"):
        spec = job_spec(tmp_path, f"{backend}-{precision}", max_steps=5, precision=precision, zero={"stage": stage},
                        eval={"every_steps": 5, "max_batches": 2}, model=BF16_TEST_MODEL)
        spec["backend"] = backend
        events = run_job(tmp_path, spec)
        curves[backend] = losses(events) + [e["eval_loss"] for e in events if e["event"] == "eval"]
    assert curves["ray"] == curves["deepspeed"]
    # each worker line is in its rank log once (Ray Train's print patch would write it twice)
    rank_log = (tmp_path / "runs" / f"ray-{precision}" / "logs" / "rank-0.log").read_text()
    lines = [line for line in rank_log.splitlines() if line.startswith("[dlaunch] {")]
    assert len(lines) > 5 and len(set(lines)) == len(lines) and rank_log.count('"event": "start"') == 1


@pytest.mark.slow
def test_ray_zero0_uses_ddp_and_stays_within_two_percent(tmp_path: Path) -> None:
    """ZeRO-0 on Ray is plain DDP (different engine, same math up to float order)."""
    evals = {}
    for backend in ("deepspeed", "ray"):
        spec = job_spec(tmp_path, f"{backend}-zero0", max_steps=8, precision="fp32", zero={"stage": 0},
                        eval={"every_steps": 8, "max_batches": 4})
        spec["backend"] = backend
        evals[backend] = [e["eval_loss"] for e in run_job(tmp_path, spec) if e["event"] == "eval"][-1]
    assert abs(evals["ray"] - evals["deepspeed"]) / evals["deepspeed"] < 0.02


def ray_worker_pids() -> list[int]:
    result = subprocess.run(["pgrep", "-f", "RayTrainWorker"], capture_output=True, text=True)
    return [int(p) for p in result.stdout.split()]


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.slow
def test_killed_ray_worker_is_restarted_and_resumes(tmp_path: Path) -> None:
    spec = job_spec(tmp_path, "ray-kill", max_steps=24, precision="fp32", zero={"stage": 2},
                    checkpoint={"uri": str(tmp_path / "ckpt"), "every_steps": 4, "keep_last": 2})
    spec["backend"] = "ray"
    spec_file = tmp_path / "ray-kill.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    metrics = tmp_path / "runs" / "ray-kill" / "metrics.jsonl"
    submit = subprocess.Popen([str(Path(sys.executable).parent / "dlaunch"), "submit", str(spec_file),
                               "--runs-dir", str(tmp_path / "runs"), "--max-restarts", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=dict(os.environ))

    def events() -> list[dict]:
        return [json.loads(x) for x in metrics.read_text().splitlines()] if metrics.exists() else []

    try:
        wait_for(lambda: any(e["event"] == "checkpoint" and e["step"] >= 8 for e in events()), 300,
                 "a checkpoint at step 8")
        killed_at = max(e["step"] for e in events() if e["event"] == "train")
        pids = ray_worker_pids()
        assert pids, "no RayTrainWorker process found"
        os.kill(pids[-1], signal.SIGKILL)
        output, _ = submit.communicate(timeout=600)
    finally:
        if submit.poll() is None:
            submit.kill()
    assert submit.returncode == 0, output.decode()[-3000:]
    log = events()
    resumes = [e for e in log if e["event"] == "resume"]
    assert resumes, "the restarted worker group did not resume from a checkpoint"
    assert killed_at - resumes[-1]["step"] <= 4 + 1  # lost work: at most one checkpoint interval
    assert max(e["step"] for e in log if e["event"] == "train") == 24
    assert next(e for e in reversed(log) if e["event"] == "end")["reason"] == "max_steps"
