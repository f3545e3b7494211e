"""YAML shapes that cost far more to load than their size suggests, each with what refuses it.

Shared by tests/test_validate_yaml_limits.py (which checks the refusal, the work done and the
memory) and bench/cli_latency.py (which times `dlaunch validate` of each).
"""

from __future__ import annotations

from launcher.yamlsource import MAX_DEPTH


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


# name -> (document, words of the refusal, line it names or None)
CASES: dict[str, tuple[str, str, int | None]] = {
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
