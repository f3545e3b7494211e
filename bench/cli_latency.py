"""CLI start-up latency: median wall time of `dlaunch --help` and `dlaunch validate` vs `python -c pass`.

Also `hostile_yaml_s`: the slowest median `dlaunch validate` among the hostile YAML shapes of
tests/hostile_yaml.py (alias bombs, deep nesting, an 80,000-item list), each refused with exit 2,
and `hostile_vs_validate`, its ratio to validating the quickstart spec.

Goal: help, validate and every refusal under 0.5 s. Last line:
{"help_s": ..., "validate_s": ..., "python_s": ..., "hostile_yaml_s": ..., "hostile_case": ...,
"hostile_vs_validate": ...}.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.hostile_yaml import CASES  # noqa: E402

DLAUNCH = str(Path(sys.executable).parent / "dlaunch")
RUNS = 9


def median_wall_time(command: list[str], expect_code: int = 0) -> float:
    times = []
    for run in range(RUNS + 1):  # the first run only warms the page cache
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if done.returncode != expect_code:
            raise SystemExit(f"{' '.join(command)} exited {done.returncode}, not {expect_code}:\n{done.stderr}")
        if run:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def hostile_yaml_times() -> dict[str, float]:
    """Median `dlaunch validate` time of each hostile document (all must be refused: exit 2)."""
    with tempfile.TemporaryDirectory() as folder:
        times = {}
        for name, (text, _, _) in CASES.items():
            path = Path(folder) / f"{name}.yaml"
            path.write_text(text)
            times[name] = median_wall_time([DLAUNCH, "validate", str(path)], expect_code=2)
        return times


def main() -> None:
    figures = {
        "help_s": median_wall_time([DLAUNCH, "--help"]),
        "validate_s": median_wall_time([DLAUNCH, "validate", "examples/quickstart.yaml"]),
        "python_s": median_wall_time([sys.executable, "-c", "pass"]),
    }
    for key, value in figures.items():
        print(f"{key:12} {value * 1000:8.1f} ms (median of {RUNS})")
    hostile = hostile_yaml_times()
    for name, value in hostile.items():
        print(f"validate {name:22} {value * 1000:8.1f} ms (refused; median of {RUNS})")
    slowest = max(hostile, key=hostile.__getitem__)
    result: dict[str, float | str] = {k: round(v, 4) for k, v in figures.items()}
    result |= {"hostile_yaml_s": round(hostile[slowest], 4), "hostile_case": slowest,
               "hostile_vs_validate": round(hostile[slowest] / figures["validate_s"], 3)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
