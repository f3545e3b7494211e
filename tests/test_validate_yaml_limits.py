"""Any spec is accepted or refused after bounded work and a few MB, whatever its YAML shape.

Aliases let a few hundred bytes stand for billions of values (the "billion laughs" shape):
before the limits, `dlaunch validate` of one ran for minutes past 8 GB. Deep nesting exhausted
Python's stack. Each case checks the refusal, the work the loader did before it (nodes composed:
fixed by the limits, not by the document) and the peak traced memory.
The wall time of each is a benchmark figure (`hostile_yaml_s` in bench/cli_latency.py), not a
test: a loaded CI machine once took 1.2 s for a refusal that takes 0.2 s here.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
import yaml

from launcher.yamlsource import MAX_BYTES, MAX_NODES, BoundedLoader, parse_yaml
from tests.conftest import REPO, CliResult
from tests.hostile_yaml import CASES

PEAK_BYTES = 8 * 2**20


class CountingLoader(BoundedLoader):
    """The bounded loader, counting the nodes it composes (each costs a few tokens of work)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.composed = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        self.composed += 1
        return super().compose_node(parent, index)


def refused_by_loader(text: str) -> tuple[CountingLoader, yaml.MarkedYAMLError]:
    """Compose `text` with the counting loader, which must refuse it; the loader and the refusal."""
    loader = CountingLoader(text)
    with pytest.raises(yaml.MarkedYAMLError) as refused:
        loader.get_single_node()
    return loader, refused.value


def with_peak_memory(run_cli, path: Path) -> tuple[CliResult, int]:
    """`dlaunch validate PATH`: its result, and the peak memory Python allocated in a second run
    (the first imports what validation needs, which is not the document's cost)."""
    result = run_cli("validate", str(path))
    tracemalloc.start()
    try:
        run_cli("validate", str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_yaml_is_refused_early_in_little_memory(case: str, run_cli, write_spec) -> None:
    text, message, line = CASES[case]
    assert len(text) <= MAX_BYTES
    path = write_spec(text)
    result, peak = with_peak_memory(run_cli, path)
    assert result.code == 2, result.err
    assert "Traceback" not in result.err
    assert message in result.err, result.err
    if line is not None:
        assert f"{path}:{line}: (file): refused" in result.err, result.err
    assert peak < PEAK_BYTES, f"{case} peaked at {peak / 2**20:.1f} MiB"

    loader, refusal = refused_by_loader(text)
    assert refusal.problem_mark is not None
    assert loader.composed <= MAX_NODES + 1, f"{case}: composed {loader.composed:,} nodes"


def test_a_long_flat_list_is_refused_a_fraction_of_the_way_in() -> None:
    text = CASES["huge-flat-list"][0]
    loader, refusal = refused_by_loader(text)
    assert loader.composed == MAX_NODES + 1
    # Refused at its 10,001st of 80,001 values. How far libyaml scanned past that is not visible
    # from Python (at most 1,024 characters by its simple-key rule); its events stop there.
    assert refusal.problem_mark.index < len(text) // 4


def test_an_oversized_file_is_refused_without_reading_it_all(run_cli, tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("w") as stream:
        stream.write("name: x\n")
        for _ in range(64):  # 64 x 128 KiB = 8 MiB of comment
            stream.write("# " + "x" * (128 * 1024) + "\n")
    result, peak = with_peak_memory(run_cli, path)
    assert result.code == 2
    assert f"a spec may have at most {MAX_BYTES:,} characters" in result.err
    assert peak < 2 * MAX_BYTES + PEAK_BYTES // 4


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
