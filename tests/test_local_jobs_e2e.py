"""A real 2-agent DeepSpeed job on this machine, managed like a cluster job (slow: real workers).

After a job ran: `list`, `status NAME` and `logs NAME --rank 1` answer from runs/<name>/.
`submit --detach` then `cancel NAME`: the workers checkpoint and exit 75, and the next `submit`
resumes from that checkpoint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_local_deepspeed import events, small_job

pytestmark = pytest.mark.slow


def write(tmp_path: Path, file_name: str, **training: Any) -> Path:
    spec = small_job(tmp_path, **training)
    spec["name"] = "e2e-job"
    path = tmp_path / file_name
    path.write_text(yaml.safe_dump(spec))
    return path


def test_list_status_and_logs_of_a_finished_job(tmp_path: Path, run_cli: Any) -> None:
    runs = str(tmp_path / "runs")
    assert run_cli("submit", str(write(tmp_path, "spec.yaml", max_steps=4)), "--runs-dir", runs).code == 0
    listed = run_cli("list", "--runs-dir", runs)
    assert listed.code == 0, listed.err
    assert listed.out.splitlines()[2].split()[:5] == ["e2e-job", "deepspeed", "Succeeded", "step", "4/4"]
    status = run_cli("status", "e2e-job", "--runs-dir", runs)
    assert status.code == 0, status.err
    lines = status.out.splitlines()
    assert lines[0].endswith("): Succeeded")
    assert lines[1].startswith("progress: step 4/4  loss ")
    assert lines[2] == f"checkpoints: last committed step 4 ({tmp_path / 'ckpt' / 'e2e-job' / 'checkpoints'})"
    assert [row.split()[2:] for row in lines[4:]] == [["exited", "0"], ["exited", "0"]]
    logs = run_cli("logs", "e2e-job", "--runs-dir", runs, "--rank", "1")
    assert logs.code == 0 and "[dlaunch]" not in logs.out and logs.out.strip()
    assert logs.out == (tmp_path / "runs" / "e2e-job" / "logs" / "rank-1.log").read_text()


def wait_for_step(metrics: Path, after: int, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if metrics.exists() and any(e["event"] == "train" for e in events(metrics.parent)[after:]):
            return
        time.sleep(0.5)
    raise AssertionError("the detached job trained no step")


def test_detach_cancel_checkpoints_and_the_next_submit_resumes(tmp_path: Path, run_cli: Any) -> None:
    runs = str(tmp_path / "runs")
    metrics = tmp_path / "runs" / "e2e-job" / "metrics.jsonl"
    started = run_cli("submit", str(write(tmp_path, "long.yaml", max_steps=200, checkpoint={
        "uri": str(tmp_path / "ckpt"), "every_steps": 1000})), "--runs-dir", runs, "--detach")
    assert started.code == 0, started.err
    assert "started in the background" in started.out
    wait_for_step(metrics, 0)
    cancelled = run_cli("cancel", "e2e-job", "--runs-dir", runs)
    assert cancelled.code == 0, cancelled.err
    assert cancelled.out.splitlines()[0].startswith("job e2e-job: stopped with exit code 75")
    latest = (tmp_path / "ckpt" / "e2e-job" / "checkpoints" / "latest").read_text().strip()
    step = int(latest.removeprefix("step-"))
    assert f"last committed step {step}" in cancelled.out
    assert run_cli("status", "e2e-job", "--runs-dir", runs).out.splitlines()[0].endswith(
        "Stopped (cancelled: exit code 75: stopped after checkpointing (preempted or cancelled); resubmitting resumes)")
    seen = len(events(metrics.parent))
    resumed = run_cli("submit", str(write(tmp_path, "resume.yaml", max_steps=step + 2)), "--runs-dir", runs)
    assert resumed.code == 0, resumed.err
    after = events(metrics.parent)[seen:]
    assert [e["step"] for e in after if e["event"] == "resume"] == [step]
    assert [e["step"] for e in after if e["event"] == "train"] == [step + 1, step + 2]
    assert json.loads((tmp_path / "runs" / "e2e-job" / "state.json").read_text())["exit_code"] == 0
