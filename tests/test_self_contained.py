"""A user clones the repository into an empty directory: nothing may be read from beside it.

Issue 17 item 12: tests read `../shared/` (the reference spec, the CRD schemas), so a fresh clone
failed five of them. What they need is vendored (`docs/cluster.reference.yaml`,
`tests/schemas/`, each with its origin), and this test keeps any path out of the repository from
coming back.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SCANNED = ("launcher", "training", "tests", "bench", "scripts", "examples", "helm", "k8s", "Makefile", ".ci")
# What reached beside the repository before: the root's parent (`REPO.parent`), and the brief's
# `shared/` folder by name (`../shared`, `/ "shared"`).
OUTSIDE = re.compile(r"""\bREPO\.parent\b|\.\./shared\b|["']shared["']""")


def scanned_files() -> list[Path]:
    files: list[Path] = []
    for name in SCANNED:
        path = REPO / name
        files += [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return [p for p in files if p.suffix not in {".pyc", ".png"} and "__pycache__" not in p.parts]


def test_nothing_reads_beside_the_repository() -> None:
    this = Path(__file__).resolve()
    hits = [f"{p.relative_to(REPO)}:{n}: {line.strip()}" for p in scanned_files() if p.resolve() != this
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if OUTSIDE.search(line)]
    assert not hits, "paths outside the repository:\n" + "\n".join(hits)


def test_the_vendored_files_name_their_origin() -> None:
    readme = (REPO / "tests" / "schemas" / "README.md").read_text()
    for schema in sorted((REPO / "tests" / "schemas").glob("*.yaml")):
        assert schema.name in readme, f"{schema.name} is not listed with its origin in tests/schemas/README.md"
        crd = yaml.safe_load(schema.read_text())
        assert crd["kind"] == "CustomResourceDefinition"
    assert (REPO / "docs" / "cluster.reference.yaml").read_text().startswith("# Copied from")
