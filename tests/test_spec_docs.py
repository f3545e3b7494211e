"""The spec's documentation comes from its models: every field is described, README's spec table
and `dlaunch init`'s comments are generated from those descriptions, and a new field shows up
in both without further work."""

from __future__ import annotations

import textwrap
from importlib import resources
from typing import Literal

import pytest
import yaml
from pydantic import Field

from launcher import spec_docs
from launcher.cli.init import starter_text
from launcher.spec import JobSpec
from launcher.spec_docs import (COMMENT_WIDTH, TABLE_BEGIN, TABLE_END, WRITE_COMMAND, annotate, field_docs,
                                markdown_table, readme_table, readme_with_table, undocumented)
from tests.conftest import REPO
from training.config import StrictModel


class Level(StrictModel):
    level: Literal["low", "high"] = Field(default="low", description="How much.")


class Probe(StrictModel):
    """A spec section of every shape the generator must handle."""

    name: str = Field(description="The name.")
    size_: int = Field(default=3, alias="size", description="A size.")
    ratio: tuple[float, float] = Field(default=(0.5, 0.25), description="Two ratios.")
    levels: list[Level] = Field(default_factory=list, description="Levels, each a section.")
    extra: Level | None = Field(default=None, description="An optional section.")
    on: Level | None = Field(default_factory=Level, description="A section that `null` turns off.")


def test_every_spec_field_has_a_description() -> None:
    assert undocumented() == [], "give these fields Field(description=...) in launcher/spec.py or training/config.py"


def test_readme_table_is_the_generated_one() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert TABLE_BEGIN in readme and TABLE_END in readme
    assert readme_table(readme) == markdown_table(), f"README's spec table is stale: run `{WRITE_COMMAND}`"


def test_walk_covers_aliases_lists_optional_sections_and_choices() -> None:
    docs = {doc.path: doc for doc in field_docs(Probe)}
    assert list(docs) == ["name", "size", "ratio", "levels", "levels[].level", "extra", "extra.level",
                          "on", "on.level"]
    assert [docs[p].default for p in ("name", "size", "ratio", "levels", "extra", "on")] == [
        "required", "`3`", "`[0.5, 0.25]`", "`[]`", "—", "on"]
    assert docs["levels"].section is Level and docs["levels"].items
    assert docs["levels[].level"].text == "How much. One of `low`, `high`."


def test_a_new_spec_field_reaches_the_table_and_an_undescribed_one_is_named() -> None:
    class Wider(JobSpec):
        new_knob: Literal["a", "b"] = Field(default="a", description="`a` or `b`, newly added.")
        bare: int = 1

    rows = markdown_table(Wider).splitlines()
    assert "| `new_knob` | `a` or `b`, newly added. | `a` |" in rows
    assert "| `bare` |  | `1` |" in rows
    assert undocumented(Wider) == ["bare"]


def test_table_escapes_pipes_and_bolds_sections() -> None:
    class Piped(StrictModel):
        mode: str = Field(default="x", description="`a|b` means either")
        sub: Level = Field(default_factory=Level, description="A section.")

    assert markdown_table(Piped).splitlines()[2:] == [
        "| `mode` | `a\\|b` means either | `x` |",
        "| **`sub`** | A section. |  |",
        "| `sub.level` | How much. One of `low`, `high`. | `low` |",
    ]


def test_readme_with_table_replaces_only_between_the_markers() -> None:
    readme = f"intro\n{TABLE_BEGIN}\n| old |\n{TABLE_END}\noutro\n"
    assert readme_with_table(readme, "| new |\n") == f"intro\n{TABLE_BEGIN}\n| new |\n{TABLE_END}\noutro\n"
    with pytest.raises(ValueError, match="no spec table markers"):
        readme_with_table("intro\n", "| new |\n")


def test_write_readme_command(tmp_path, capsys) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{TABLE_BEGIN}\nstale\n{TABLE_END}\n", encoding="utf-8")
    assert spec_docs.main(["--write-readme", str(readme)]) == 0
    assert readme_table(readme.read_text(encoding="utf-8")) == markdown_table()
    readme.write_text("# no markers\n", encoding="utf-8")
    assert spec_docs.main(["--write-readme", str(readme)]) == 1
    assert "no spec table markers" in capsys.readouterr().err


def _key_count(data: object) -> int:
    """Keys of a parsed YAML mapping, nested ones included."""
    if not isinstance(data, dict):
        return 0
    return sum(1 + _key_count(value) for value in data.values())


def _comment_above(lines: list[str], index: int) -> str:
    """The text of the comment lines directly above line `index`, joined."""
    above = []
    while index > 0 and lines[index - 1].lstrip().startswith("#"):
        index -= 1
        above.insert(0, lines[index].lstrip()[2:])
    return " ".join(above)


def test_init_comments_every_key_with_its_description() -> None:
    text = starter_text()
    lines = text.splitlines()
    template = resources.files("launcher").joinpath("templates/starter.yaml").read_text(encoding="utf-8")
    assert yaml.safe_load(text) == yaml.safe_load(template)
    assert all(len(line) <= COMMENT_WIDTH for line in lines if line.lstrip().startswith("#"))
    docs = {doc.path: doc for doc in field_docs()}
    checked = 0
    stack: list[tuple[int, str]] = []
    for index, line in enumerate(lines):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent, key = len(line) - len(line.lstrip()), line.strip().split(":", 1)[0]
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, key)]
        doc = docs[".".join(k for _, k in stack)]
        assert doc.text in _comment_above(lines, index), f"line {index + 1}: {line!r}"
        checked += 1
    assert checked == _key_count(yaml.safe_load(text))


def test_init_names_the_keys_a_section_leaves_out() -> None:
    text = starter_text()
    assert "Other top-level keys: image, kubernetes." in text
    assert "Other keys: eps." in text  # training.optimizer sets every key but eps


def test_annotate_lists_of_sections_and_flow_mappings() -> None:
    spec = textwrap.dedent("""\
        kubernetes:
          tolerations:
            - key: nvidia.com/gpu
              operator: Exists
          secrets: {s3: creds}
        """)
    out = annotate(spec)
    assert yaml.safe_load(out) == yaml.safe_load(spec)
    lines = out.splitlines()
    docs = {doc.path: doc for doc in field_docs()}
    operator = lines.index("      operator: Exists")
    assert _comment_above(lines, operator) == docs["kubernetes.tolerations[].operator"].text
    secrets = next(i for i, line in enumerate(lines) if line.strip().startswith("secrets:"))
    assert _comment_above(lines, secrets).startswith(docs["kubernetes.secrets"].text)
    assert docs["kubernetes.secrets.s3"].text not in out  # one comment per line: the flow mapping's own


def test_annotated_reference_spec_keeps_its_data() -> None:
    text = (REPO / "docs" / "cluster.reference.yaml").read_text(encoding="utf-8")
    assert yaml.safe_load(annotate(text)) == yaml.safe_load(text)


def test_init_writes_the_annotated_starter(run_cli, tmp_path) -> None:
    path = tmp_path / "cluster.yaml"
    assert run_cli("init", str(path)).code == 0
    assert path.read_text(encoding="utf-8") == starter_text()
