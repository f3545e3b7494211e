"""Property: whatever a user writes, `dlaunch validate` answers with exit 0 or 2, never a traceback."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launcher.cli import main
from tests.conftest import base_spec

BASE = base_spec()

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=6)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in the spec (mappings and list items)."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, child in node.items():
            found += paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += paths(child, (*prefix, index))
    return found


ALL_PATHS = paths(BASE)


def apply(spec: dict[str, Any], path: tuple[Any, ...], op: str, value: Any, key: str) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    parent = spec
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if op == "delete":
        del parent[last]
    elif op == "replace":
        parent[last] = value
    elif op == "add-key" and isinstance(parent, dict):
        parent[key] = value
    elif op == "rename" and isinstance(parent, dict):
        parent[key] = parent.pop(last)
    return spec


mutations = st.lists(
    st.tuples(st.sampled_from(ALL_PATHS), st.sampled_from(["delete", "replace", "add-key", "rename"]), values,
              st.text(min_size=1, max_size=12)),
    min_size=1, max_size=3,
)


def run_validate(tmp: Path, text: str, capsys: Any) -> tuple[int, str]:
    path = tmp / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    capsys.readouterr()
    code = main(["validate", str(path)])
    return code, capsys.readouterr().err


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations)
def test_mutated_specs_never_escape_a_traceback(tmp_path: Path, capsys: Any, changes: list[Any]) -> None:
    spec = BASE
    for path, op, value, key in changes:
        try:
            spec = apply(spec, path, op, value, key)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
    code, err = run_validate(tmp_path, text, capsys)
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        assert "problem" in err


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_arbitrary_text_never_escapes_a_traceback(tmp_path: Path, capsys: Any, text: str) -> None:
    code, err = run_validate(tmp_path, text, capsys)
    assert code == 2, err  # no random text is a complete valid spec
    assert "Traceback" not in err
