"""Any spec is accepted or refused within a second and a few MB, whatever its YAML shape.

Aliases let a few hundred bytes stand for billions of values (the "billion laughs" shape):
before the limits, `dlaunch validate` of one ran for minutes past 8 GB. Deep nesting exhausted
Python's stack. Each case measures wall time and peak traced memory, with bounds generous for a
slow machine yet orders of magnitude below what the unbounded expansion needs.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from launcher.yamlsource import MAX_BYTES, MAX_DEPTH, MAX_NODES, BoundedLoader, parse_yaml
from tests.conftest import REPO, CliResult

SECONDS = 1.0
PEAK_BYTES = 8 * 2**20


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """`l0` is `width` strings; each next level is a list of `width` aliases of the previous one."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def merge_bomb(levels: int = 30) -> str:
    """Merge keys that double the mapping at every level (`<<: [*m, *m]` with distinct keys)."""
    lines = ["m0: &m0 {a0: 1}"]
    lines += [f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], a{i}: 1}}" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def measured(run_cli, path: Path) -> tuple[CliResult, float, int]:
    """`dlaunch validate PATH`: its result, wall time, and peak traced memory (a second run, since
    tracing slows Python down several times)."""
    started = time.perf_counter()
    result = run_cli("validate", str(path))
    elapsed = time.perf_counter() - started
    tracemalloc.start()
    try:
        run_cli("validate", str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, elapsed, peak


CASES = {
    "billion-laughs": (billion_laughs(), "expands to more than", 5),  # refused at level 4 of 9
    "merge-key-bomb": (merge_bomb(), "expands to more than", None),
    "deep-flow-nesting": ("name: x\ntraining: " + "[" * 60_000 + "]" * 60_000 + "\n", "nested more than", 2),
    "deep-block-nesting": ("".join("  " * i + f"k{i}:\n" for i in range(200)) + "\n", "nested more than",
                           MAX_DEPTH),
    "deep-through-aliases": ("a: &a " + "[" * 30 + "1" + "]" * 30 + "\nb: " + "[" * 20 + "*a" + "]" * 20 + "\n",
                             "this alias nests the document", 2),
    "recursive-alias": ("a: &a [1, *a]\n", "refers to its own anchor", 1),
    "huge-flat-list": ("name: [" + "1, " * 80_000 + "]\n", "expands to more than", 1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_yaml_is_refused_fast_in_little_memory(case: str, run_cli, write_spec) -> None:
    text, message, line = CASES[case]
    assert len(text) <= MAX_BYTES
    path = write_spec(text)
    result, elapsed, peak = measured(run_cli, path)
    assert result.code == 2, result.err
    assert "Traceback" not in result.err
    assert message in result.err, result.err
    if line is not None:
        assert f"{path}:{line}: (file): refused" in result.err, result.err
    assert elapsed < SECONDS, f"{case} took {elapsed:.2f} s"
    assert peak < PEAK_BYTES, f"{case} peaked at {peak / 2**20:.1f} MiB"


def test_an_oversized_file_is_refused_without_reading_it_all(run_cli, tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("w") as stream:
        stream.write("name: x\n")
        for _ in range(64):  # 64 x 128 KiB = 8 MiB of comment
            stream.write("# " + "x" * (128 * 1024) + "\n")
    result, elapsed, peak = measured(run_cli, path)
    assert result.code == 2
    assert f"a spec may have at most {MAX_BYTES:,} characters" in result.err
    assert elapsed < SECONDS and peak < 2 * MAX_BYTES + PEAK_BYTES // 4


def test_an_oversized_string_is_refused() -> None:
    with pytest.raises(Exception, match="a spec may have at most"):
        parse_yaml("a: " + "x" * MAX_BYTES + "\n", "big.yaml")


def test_ordinary_aliases_still_work(run_cli, write_spec) -> None:
    text = (
        "name: aliased\n"
        "training:\n"
        "  model: {preset: llama-tiny}\n"
        "  data:\n"
        f"    train: &corpus /usr/share/doc/python3.11/html/_sources/tutorial/*.rst.txt\n"
        "    validation: *corpus\n"
        "  batch: {global: 8}\n"
        "  max_steps: 1\n"
    )
    result = run_cli("validate", str(write_spec(text)))
    assert result.code == 0, result.err


def test_the_reference_spec_is_far_below_every_limit() -> None:
    text = (REPO / "docs" / "cluster.reference.yaml").read_text()
    loader = BoundedLoader(text)
    loader.get_single_node()
    assert loader.expanded * 10 < MAX_NODES
    assert len(text) * 10 < MAX_BYTES


def test_the_limits_count_what_aliases_stand_for() -> None:
    loader = BoundedLoader("a: &a [1, 2, 3]\nb: [*a, *a]\n")
    loader.get_single_node()
    # root 1 + keys a, b 2 + [1,2,3] 4 + [*a, *a] 1 + 2 x 4
    assert loader.expanded == 1 + 2 + 4 + 1 + 8
