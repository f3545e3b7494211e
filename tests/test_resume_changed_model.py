"""A real local job resubmitted with another model under the same name (issue 17, item 17).

llama-tiny trains 2 steps and commits a checkpoint. Then, under the same name and checkpoint URI:

1. `gpt2-tiny` is refused by `submit` itself (exit 2), before any worker starts;
2. with the launcher's check out of the way (as for checkpoints it cannot read, e.g. on S3), the
   workers refuse it before loading anything: exit CONFIG_ERROR = 78 (not retried), the difference
   and the way out in rank 0's log, and the old checkpoints and model.json untouched;
3. llama-tiny with another learning rate and more steps resumes from step 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.cli import main
from tests.jobs import job_spec, run_job
from training.exitcodes import CONFIG_ERROR

pytestmark = pytest.mark.slow
NAME = "changed-model"


def spec(tmp_path: Path, preset: str, max_steps: int = 2, lr: float = 3e-3) -> dict[str, Any]:
    """One worker (the cheapest real job), a checkpoint every 2 steps."""
    data = job_spec(tmp_path, NAME, max_steps=max_steps, model={"preset": preset}, optimizer={"lr": lr},
                    precision="fp32", checkpoint={"uri": str(tmp_path / "ckpt"), "every_steps": 2},
                    batch={"global": 4, "micro": 4})
    data["resources"] = {"nodes": 1, "gpus_per_node": 1}
    return data


def submit(tmp_path: Path, data: dict[str, Any]) -> int:
    spec_file = tmp_path / f"{NAME}.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    return main(["submit", str(spec_file), "--runs-dir", str(tmp_path / "runs")])


def test_a_changed_model_is_refused_and_a_changed_learning_rate_resumes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    run_job(tmp_path, spec(tmp_path, "llama-tiny"))
    job_root = tmp_path / "ckpt" / NAME
    assert (job_root / "checkpoints" / "latest").read_text().strip() == "step-2"
    recorded = (job_root / "model.json").read_text()

    capsys.readouterr()
    assert submit(tmp_path, spec(tmp_path, "gpt2-tiny")) == 2
    assert "model: preset llama-tiny -> preset gpt2-tiny" in capsys.readouterr().err

    import launcher.support

    with monkeypatch.context() as patch:
        patch.setattr(launcher.support, "checkpoint_problems", lambda spec: [])
        assert submit(tmp_path, spec(tmp_path, "gpt2-tiny")) == 1
    assert f"failed (exit code {CONFIG_ERROR})" in capsys.readouterr().err
    rank0 = (tmp_path / "runs" / NAME / "logs" / "rank-0.log").read_text()
    assert "configuration error: the checkpoints under" in rank0
    assert "architecture: llama (preset llama-tiny) -> gpt2 (preset gpt2-tiny)" in rank0
    assert "size mismatch" not in rank0
    assert (job_root / "model.json").read_text() == recorded
    assert (job_root / "checkpoints" / "latest").read_text().strip() == "step-2"

    events = run_job(tmp_path, spec(tmp_path, "llama-tiny", max_steps=4, lr=1e-3))
    resumed = [e for e in events if e["event"] == "resume"]
    assert resumed and resumed[-1]["step"] == 2
    assert [e["step"] for e in events if e["event"] == "train"][-2:] == [3, 4]
    assert json.loads((job_root / "model.json").read_text())["preset"] == "llama-tiny"
