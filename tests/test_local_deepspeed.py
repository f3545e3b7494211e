"""Real jobs on this machine: two torchrun agents (c10d rendezvous on loopback), DeepSpeed on CPU.

These start real worker processes; what they verify is the whole local path end to end:
spec -> plan -> job.json -> torchrun -> training.run -> checkpoints, W&B offline files, logs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import base_spec

pytestmark = pytest.mark.slow


def small_job(tmp_path: Path, **training: Any) -> dict[str, Any]:
    spec = base_spec()
    spec["name"] = "it-job"
    spec["resources"] = {"nodes": 2, "gpus_per_node": 1}
    spec["training"].update({
        "max_steps": 8,
        "optimizer": {"lr": 3e-3},
        "schedule": {"warmup_steps": 2},
        "eval": {"every_steps": 4, "max_batches": 4},
        "checkpoint": {"uri": str(tmp_path / "ckpt"), "every_steps": 4, "keep_last": 2},
        "tracking": {"wandb": {"project": "dlaunch-tests", "mode": "offline"}},
    })
    spec["training"].update(training)
    return spec


def events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory) -> dict[str, Any]:
    """One 8-step job shared by the assertions below (it is the expensive part)."""
    from launcher.cli import main

    tmp = tmp_path_factory.mktemp("job")
    spec_file = tmp / "spec.yaml"
    import yaml

    spec_file.write_text(yaml.safe_dump(small_job(tmp)))
    code = main(["submit", str(spec_file), "--runs-dir", str(tmp / "runs")])
    return {"code": code, "tmp": tmp, "run_dir": tmp / "runs" / "it-job", "spec_file": spec_file}


def test_job_succeeds_and_loss_falls(finished_job) -> None:
    assert finished_job["code"] == 0
    log = events(finished_job["run_dir"])
    evals = [e["eval_loss"] for e in log if e["event"] == "eval"]
    losses = [e["loss"] for e in log if e["event"] == "train"]
    assert [e["step"] for e in log if e["event"] == "eval"] == [0, 4, 8]
    assert evals[-1] < evals[0] - 0.5
    assert losses[-1] < losses[0]
    start = next(e for e in log if e["event"] == "start")
    assert start["world_size"] == 2


def test_checkpoints_are_committed_with_manifests(finished_job) -> None:
    root = finished_job["tmp"] / "ckpt" / "it-job" / "checkpoints"
    assert (root / "latest").read_text().strip() == "step-8"
    manifest = json.loads((root / "step-8" / "manifest.json").read_text())
    names = {f["path"] for f in manifest["files"]}
    assert {"rank-0.pt", "rank-1.pt", "mp_rank_00_model_states.pt"} <= names
    assert manifest["world_size"] == 2 and manifest["sampler"]["consumed"] == 8 * 16
    assert (root / "step-4" / "manifest.json").exists()
    assert (finished_job["tmp"] / "ckpt" / "it-job" / "tokenizer.json").exists()


def test_wandb_offline_run_and_rank_logs_exist(finished_job) -> None:
    run_dir = finished_job["run_dir"]
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    assert list(offline_runs[0].glob("*.wandb"))
    logs = run_dir / "logs"
    assert {p.name for p in logs.iterdir()} >= {"rank-0.log", "rank-1.log", "agent-0.log", "agent-1.log"}
    assert "[dlaunch]" in (logs / "rank-0.log").read_text()
    # Two agents stand for two machines: gradients are summed over gloo, never through /dev/shm.
    assert "through shared memory" not in (logs / "rank-0.log").read_text()


def test_resubmit_resumes_from_latest_checkpoint(finished_job) -> None:
    import yaml

    from launcher.cli import main

    tmp = finished_job["tmp"]
    spec_file = tmp / "longer.yaml"
    spec_file.write_text(yaml.safe_dump(small_job(tmp, max_steps=10)))
    assert main(["submit", str(spec_file), "--runs-dir", str(tmp / "runs")]) == 0
    log = events(finished_job["run_dir"])
    resume = [e for e in log if e["event"] == "resume"]
    assert resume and resume[-1]["step"] == 8
    steps_after = [e["step"] for e in log[log.index(resume[-1]):] if e["event"] == "train"]
    assert steps_after == [9, 10]
    from launcher.progress import read_events

    assert [e["step"] for e in read_events(finished_job["run_dir"] / "metrics.jsonl") if e["event"] == "eval"][0] == 0
    # W&B offline writes one directory per session; a resumed run keeps the run id in its name.
    run_ids = {p.name.rsplit("-", 1)[1] for p in (finished_job["run_dir"] / "wandb").glob("offline-run-*")}
    assert len(run_ids) == 1


def test_worker_configuration_error_fails_fast_with_logs(tmp_path: Path, run_cli, write_spec) -> None:
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("too short to fill one sequence\n")
    spec = small_job(tmp_path)
    spec["training"]["data"] = {"train": str(corpus), "validation": str(corpus), "seq_len": 512}
    result = run_cli("submit", str(write_spec(spec)), "--runs-dir", str(tmp_path / "runs"))
    assert result.code == 1
    assert "failed (exit code 78)" in result.err
    assert "not enough for one sequence" in result.err
    assert "Traceback" not in result.err.split("---")[0]
