"""The launcher/worker layering, checked by reading the source (ast), not by importing it.

- `training/**` never imports `launcher` (the worker runs in images without the launcher's needs).
- At module level, `launcher/**` imports from `training` only the contract, `training.contract`
  (resolved job, exit codes, job paths, metric events, the checkpoint reader), and the bare
  `training` package (its `__version__`; its `__init__` imports nothing).
- torch, transformers, deepspeed and ray, and the training modules that import them at module
  level, are imported inside functions, and only by the launcher modules that build or load
  models: the planner's model introspection and the artifact commands.
- The module-level imports of `launcher/` and `training/` form no cycle.

"Module level" is what runs when a module is imported: its body, including `if`/`try`/`with`
blocks and class bodies, but not function bodies or `if TYPE_CHECKING:` blocks.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("launcher", "training")
CONTRACT = "training.contract"
HEAVY = frozenset({"torch", "transformers", "deepspeed", "ray"})

# Module-level imports of training modules other than the contract, in launcher files that import
# them today. Each entry names the file's import and why it stays for now; every name listed is
# re-exported by `training.contract`, so the fix is to import it from there and delete the entry
# (`test_every_exception_is_still_needed` says when one is stale).
CONTRACT_EXCEPTIONS: dict[tuple[str, str], str] = {}

# The launcher modules that may import torch-bearing modules, inside functions only.
TORCH_IMPORTERS: dict[str, str] = {
    "launcher.plan.introspect": "the planner's model introspection: counts models on the meta device",
    "launcher.cli.export": "artifact command: loads a trained model and exports it",
    "launcher.cli.compare": "artifact command: loads trained models and benchmarks them",
    "launcher.hardware": "asks torch for the CPU's capability, as DeepSpeed decides, when the CPU flags do not say",
}


@dataclass(frozen=True)
class Import:
    """One import statement's target, as `importer` line `line` names it."""

    importer: str
    target: str
    line: int
    module_level: bool


def module_name(path: Path) -> str:
    """`launcher/plan/__init__.py` -> `launcher.plan`."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of the two packages, by dotted name."""
    return {module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(body: list[ast.stmt], module_level: bool) -> Iterator[tuple[ast.stmt, bool]]:
    """Every statement under `body`, with whether it runs at import time."""
    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _statements(stmt.body, False)
            continue
        if isinstance(stmt, ast.If) and _is_type_checking(stmt.test):
            yield from _statements(stmt.orelse, module_level)
            continue
        yield stmt, module_level
        for field in ("body", "orelse", "finalbody"):
            yield from _statements(getattr(stmt, field, []), module_level)
        for handler in getattr(stmt, "handlers", []):
            yield from _statements(handler.body, module_level)


def _absolute(importer: str, node: ast.ImportFrom) -> str:
    """The module a `from ... import` names, relative imports resolved against `importer`."""
    if not node.level:
        return node.module or ""
    package = importer.split(".") if modules()[importer].name == "__init__.py" else importer.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(importer: str, node: ast.stmt) -> list[str]:
    """Modules an import statement loads: `from pkg import sub` names the submodule when it is one."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = _absolute(importer, node)
    found = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules()]
    return found if len(found) == len(node.names) else [base, *found]


@cache
def imports_of(importer: str) -> tuple[Import, ...]:
    """Every import in `importer`'s source, one entry per module it loads."""
    tree = ast.parse(modules()[importer].read_text(encoding="utf-8"))
    return tuple(Import(importer, target, stmt.lineno, module_level)
                 for stmt, module_level in _statements(tree.body, True)
                 for target in _targets(importer, stmt))


def all_imports() -> Iterator[Import]:
    for name in modules():
        yield from imports_of(name)


def is_ours(target: str) -> bool:
    return target.split(".")[0] in PACKAGES


def is_heavy(target: str) -> bool:
    return target.split(".")[0] in HEAVY


@cache
def torch_bearing(module: str) -> bool:
    """Whether importing `module` imports a heavy library (through its module-level imports, transitively)."""
    seen: set[str] = set()
    pending = [module]
    while pending:
        current = pending.pop()
        if current in seen or current not in modules():
            continue
        seen.add(current)
        for imp in imports_of(current):
            if imp.module_level and is_heavy(imp.target):
                return True
            if imp.module_level and is_ours(imp.target):
                pending.append(imp.target)
    return False


def where(imp: Import) -> str:
    """`launcher/x.py:12 imports training.y`, for failure messages."""
    return f"{modules()[imp.importer].relative_to(REPO)}:{imp.line} imports {imp.target}"


def contract_violations() -> list[Import]:
    """Module-level imports of training modules, other than the contract, by launcher modules."""
    return [imp for imp in all_imports()
            if imp.importer.startswith("launcher") and imp.module_level
            and imp.target.split(".")[0] == "training" and imp.target not in ("training", CONTRACT)]


def test_training_never_imports_launcher() -> None:
    bad = [where(imp) for imp in all_imports() if imp.importer.startswith("training")
           and imp.target.split(".")[0] == "launcher"]
    assert not bad, "the worker must not depend on the launcher:\n" + "\n".join(bad)


def test_launcher_imports_training_only_through_the_contract() -> None:
    bad = [where(imp) for imp in contract_violations() if (imp.importer, imp.target) not in CONTRACT_EXCEPTIONS]
    assert not bad, (f"at module level, launcher modules import training things from {CONTRACT} "
                     "(import anything else inside the function that needs it):\n" + "\n".join(bad))


def test_every_exception_is_still_needed() -> None:
    used = {(imp.importer, imp.target) for imp in contract_violations()}
    stale = sorted(set(CONTRACT_EXCEPTIONS) - used)
    assert not stale, f"delete these entries from CONTRACT_EXCEPTIONS, the imports are gone: {stale}"


def test_training_package_root_imports_nothing() -> None:
    """The launcher may import the bare `training` package at start-up only because it is empty."""
    assert not [imp for imp in imports_of("training") if imp.target != "__future__"]


def test_the_contract_is_light_and_lists_what_it_exports() -> None:
    assert not torch_bearing(CONTRACT)
    tree = ast.parse(modules()[CONTRACT].read_text(encoding="utf-8"))
    imported = {alias.asname or alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
                and node.module != "__future__" for alias in node.names}
    import training.contract

    assert set(training.contract.__all__) == imported, "the contract re-exports exactly what it imports"


def test_heavy_imports_stay_in_functions_of_the_model_loading_modules() -> None:
    module_level = [where(imp) for imp in all_imports() if imp.importer.startswith("launcher")
                    and imp.module_level and (is_heavy(imp.target) or torch_bearing(imp.target))]
    assert not module_level, "torch-bearing imports at module level of the launcher:\n" + "\n".join(module_level)
    elsewhere = [where(imp) for imp in all_imports() if imp.importer.startswith("launcher")
                 and imp.importer not in TORCH_IMPORTERS and (is_heavy(imp.target) or torch_bearing(imp.target))]
    assert not elsewhere, (f"only {sorted(TORCH_IMPORTERS)} import torch-bearing modules (inside functions):\n"
                           + "\n".join(elsewhere))


def test_every_torch_importer_still_imports_torch() -> None:
    idle = [name for name in TORCH_IMPORTERS
            if not any(is_heavy(imp.target) or torch_bearing(imp.target) for imp in imports_of(name))]
    assert not idle, f"delete these entries from TORCH_IMPORTERS, they import nothing torch-bearing: {idle}"


def _cycle_from(start: str, graph: dict[str, list[str]]) -> list[str] | None:
    """A path start -> ... -> start in `graph`, found depth first, or None."""
    stack: list[tuple[str, Iterator[str]]] = [(start, iter(graph[start]))]
    path, seen = [start], {start}
    while stack:
        node, successors = stack[-1]
        successor = next(successors, None)
        if successor is None:
            stack.pop()
            path.pop()
        elif successor == start:
            return path + [start]
        elif successor not in seen:
            seen.add(successor)
            stack.append((successor, iter(graph[successor])))
            path.append(successor)
    return None


def module_graph() -> dict[str, list[str]]:
    """Module-level import edges between modules of the two packages."""
    return {name: sorted({imp.target for imp in imports_of(name) if imp.module_level and imp.target in modules()})
            for name in modules()}


def test_module_level_imports_have_no_cycle() -> None:
    graph = module_graph()
    cycles = {tuple(sorted(set(cycle))): cycle for name in graph if (cycle := _cycle_from(name, graph))}
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles.values())


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle_from("a", {"a": ["b"], "b": ["c", "a"], "c": []}) == ["a", "b", "a"]
    assert _cycle_from("a", {"a": ["b"], "b": ["c"], "c": []}) is None


def test_relative_and_submodule_imports_resolve() -> None:
    imports = {(imp.target, imp.module_level) for imp in imports_of("launcher.plan.job")}
    assert ("launcher.plan.introspect", True) in imports
    assert (CONTRACT, True) in imports
    assert ("training.models.presets", False) in {(imp.target, imp.module_level)
                                                   for imp in imports_of("launcher.plan.shape")}


@pytest.mark.parametrize("module", ["training.contract", "launcher.plan", "launcher.resolve", "launcher.report"])
def test_importing_loads_no_heavy_library(module: str) -> None:
    """What the static check promises, observed: importing these loads none of the heavy libraries."""
    code = (f"import sys, json; import {module}; "
            f"print(json.dumps(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
