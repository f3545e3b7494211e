"""Run small real jobs through `dlaunch submit` and read back what they logged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from launcher.cli import main
from tests.conftest import base_spec


def job_spec(tmp_path: Path, name: str, **training: Any) -> dict[str, Any]:
    """A 2-worker local DeepSpeed spec writing everything under `tmp_path`."""
    spec = base_spec()
    spec["name"] = name
    spec["training"].update({
        "optimizer": {"lr": 3e-3},
        "schedule": {"warmup_steps": 2},
        "eval": {"every_steps": 1000, "max_batches": 2},
        "checkpoint": {"uri": str(tmp_path / "ckpt"), "every_steps": 1000},
        "tracking": {"wandb": {"mode": "disabled"}},
    })
    spec["training"].update(training)
    return spec


def run_job(tmp_path: Path, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Submit `spec` and return its metrics events; fails the test with the logs on error."""
    spec_file = tmp_path / f"{spec['name']}.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    code = main(["submit", str(spec_file), "--runs-dir", str(tmp_path / "runs")])
    run_dir = tmp_path / "runs" / spec["name"]
    logs = "\n".join(p.read_text()[-3000:] for p in sorted((run_dir / "logs").glob("*.log")))
    assert code == 0, f"dlaunch submit exited {code}; worker logs:\n{logs or '(none: see the captured stderr)'}"
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(events: list[dict[str, Any]]) -> list[float]:
    return [e["loss"] for e in events if e["event"] == "train"]
