"""Time from `dlaunch submit` to the first optimizer step, DeepSpeed vs Ray backend.

Local target, 2 workers (nodes 2 x 1 for DeepSpeed's torchrun agents; 2 Ray Train workers),
the quickstart's model and data, median of 5 runs each in fresh directories. The first step's
time is the wall-clock stamp of the first `train` event the worker logged.

Last line: {"deepspeed_s": ..., "ray_s": ...}.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
RUNS = 5


def spec_for(backend: str, tmp: Path) -> dict:
    spec = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    spec["name"] = f"ttfs-{backend}"
    spec["backend"] = backend
    spec["training"].update({
        "max_steps": 2,
        "eval": {"every_steps": 1000, "max_batches": 1},
        "checkpoint": {"uri": str(tmp / "ckpt"), "every_steps": 1000},
        "tracking": {"wandb": {"mode": "disabled"}},
    })
    spec["training"]["schedule"]["warmup_steps"] = 1
    return spec


def time_to_first_step(backend: str) -> float:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        spec_file = tmp / "spec.yaml"
        spec_file.write_text(yaml.safe_dump(spec_for(backend, tmp)))
        started = time.time()
        subprocess.run([str(Path(sys.executable).parent / "dlaunch"), "submit", str(spec_file), "--runs-dir",
                        str(tmp / "runs")], check=True, cwd=REPO, env=dict(os.environ), capture_output=True)
        events = [json.loads(line) for line in (tmp / "runs" / f"ttfs-{backend}" / "metrics.jsonl").read_text().splitlines()]
        first = next(e for e in events if e["event"] == "train")
        return first["time"] - started


def main() -> None:
    results = {}
    for backend in ("deepspeed", "ray"):
        samples = [time_to_first_step(backend) for _ in range(RUNS)]
        results[f"{backend}_s"] = round(statistics.median(samples), 2)
        print(f"{backend:10} median {results[f'{backend}_s']:.1f} s  runs: {', '.join(f'{s:.1f}' for s in samples)}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
