"""CLI start-up latency: median wall time of `dlaunch --help` and `dlaunch validate` vs `python -c pass`.

Goal: both under 0.5 s. Last line: {"help_s": ..., "validate_s": ..., "python_s": ...}.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DLAUNCH = str(Path(sys.executable).parent / "dlaunch")
RUNS = 9


def median_wall_time(command: list[str]) -> float:
    times = []
    subprocess.run(command, cwd=REPO, capture_output=True, check=True)  # warm the page cache
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    figures = {
        "help_s": median_wall_time([DLAUNCH, "--help"]),
        "validate_s": median_wall_time([DLAUNCH, "validate", "examples/quickstart.yaml"]),
        "python_s": median_wall_time([sys.executable, "-c", "pass"]),
    }
    for key, value in figures.items():
        print(f"{key:12} {value * 1000:8.1f} ms (median of {RUNS})")
    print(json.dumps({k: round(v, 4) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
