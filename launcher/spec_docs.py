"""Documentation generated from the job spec's models: README's spec table and `dlaunch init`'s comments.

Every field of `JobSpec` (and of the `training:` part it embeds from `training/config.py`)
carries its `description`. This module walks the models, so a field added there appears in
both places with no further work, and the tests fail when README.md's table differs from
the one generated here or when a field has no description.

    python -m launcher.spec_docs                 # print the table
    python -m launcher.spec_docs --write-readme  # replace the table in README.md

Imports nothing heavier than pydantic and PyYAML: `dlaunch init` uses it.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from launcher.spec import JobSpec
from launcher.yamlsource import parse_yaml

README = Path(__file__).resolve().parent.parent / "README.md"
WRITE_COMMAND = "python -m launcher.spec_docs --write-readme"
TABLE_BEGIN = (f"<!-- spec table: generated from the field descriptions in launcher/spec.py and "
               f"training/config.py by `{WRITE_COMMAND}`; do not edit by hand -->")
TABLE_END = "<!-- end of spec table -->"
COMMENT_WIDTH = 100


@dataclass(frozen=True)
class FieldDoc:
    """One key of the spec as users write it.

    `path` is dotted, with YAML names (aliases such as `global`) and `[]` for the items of a list
    of sections; `section` is the model of a nested section (`items`: a list of them), whose own
    keys follow it.
    """

    path: str
    key: str
    description: str
    choices: tuple[Any, ...]
    default: str
    section: type[BaseModel] | None
    items: bool = False

    @property
    def child_prefix(self) -> str:
        """The prefix of the section's own keys."""
        return f"{self.path}[]." if self.items else f"{self.path}."

    @property
    def text(self) -> str:
        """The description, plus the allowed values it does not already name."""
        unnamed = [c for c in self.choices if f"`{c}`" not in self.description]
        if not unnamed:
            return self.description
        return f"{self.description} One of {', '.join(f'`{c}`' for c in self.choices)}."


def _type_args(annotation: Any) -> tuple[Any, ...]:
    """The members of a union or the item type of a list (nothing for any other annotation)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list):
        return typing.get_args(annotation)
    return ()


def nested_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The section model inside `annotation` (through `| None` and `list[...]`) and whether it is a list."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    for arg in _type_args(annotation):
        found, items = nested_model(arg)
        if found is not None:
            return found, items or typing.get_origin(annotation) is list
    return None, False


def literal_choices(annotation: Any) -> tuple[Any, ...]:
    """Every value a `Literal[...]` inside `annotation` allows (through `| None` and `list[...]`)."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    return tuple(choice for arg in _type_args(annotation) for choice in literal_choices(arg))


def yaml_value(value: Any) -> str:
    """A default as it would be written in the spec (`true`, `runs`, `[0.9, 0.999]`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    return str(value)


def default_text(info: FieldInfo) -> str:
    """The default column: `required`, `—` for unset, blank for a section whose keys carry defaults
    (`on` where `null` would turn that section off)."""
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "on" if type(None) in _type_args(info.annotation) else ""
    return "—" if value is None else f"`{yaml_value(value)}`"


def own_docs(model: type[BaseModel], prefix: str = "") -> list[FieldDoc]:
    """The keys of `model` itself, in declaration order."""
    docs = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        section, items = nested_model(info.annotation)
        docs.append(FieldDoc(path=prefix + key, key=key, description=" ".join((info.description or "").split()),
                             choices=literal_choices(info.annotation), default=default_text(info),
                             section=section, items=items))
    return docs


def field_docs(model: type[BaseModel] = JobSpec, prefix: str = "") -> list[FieldDoc]:
    """Every key of `model` and of its sections, depth first, in declaration order."""
    docs = []
    for doc in own_docs(model, prefix):
        docs.append(doc)
        if doc.section is not None:
            docs += field_docs(doc.section, doc.child_prefix)
    return docs


def undocumented(model: type[BaseModel] = JobSpec) -> list[str]:
    """Paths of the keys that have no description (a test keeps this empty)."""
    return [doc.path for doc in field_docs(model) if not doc.description]


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|")


def markdown_table(model: type[BaseModel] = JobSpec) -> str:
    """The README table: one row per key, sections in bold before their keys."""
    rows = ["| key | meaning | default |", "| --- | --- | --- |"]
    for doc in field_docs(model):
        key = f"**`{doc.path}`**" if doc.section else f"`{doc.path}`"
        rows.append(f"| {key} | {_cell(doc.text)} | {_cell(doc.default)} |")
    return "\n".join(rows) + "\n"


def readme_with_table(readme: str, table: str) -> str:
    """`readme` with the text between the spec-table markers replaced by `table`."""
    start, end = readme.find(TABLE_BEGIN), readme.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no spec table markers: put {TABLE_BEGIN!r} and {TABLE_END!r} "
                         "on lines of their own where the table belongs")
    return readme[:start + len(TABLE_BEGIN)] + "\n" + table + readme[end:]


def readme_table(readme: str) -> str:
    """The table README.md holds now, between the markers."""
    start, end = readme.find(TABLE_BEGIN), readme.find(TABLE_END)
    if start < 0 or end < start:
        return ""
    return readme[start + len(TABLE_BEGIN):end].lstrip("\n")


def _comment(text: str, indent: str) -> list[str]:
    """`text` as YAML comment lines at `indent`, wrapped to COMMENT_WIDTH columns."""
    width = max(COMMENT_WIDTH - len(indent) - 2, 40)
    return [f"{indent}# {line}" for line in textwrap.wrap(text, width, break_long_words=False,
                                                             break_on_hyphens=False)]


def _other_keys(model: type[BaseModel], given: dict[str, Any]) -> list[str]:
    """The keys of `model` that the mapping `given` does not set."""
    return [doc.key for doc in own_docs(model) if doc.key not in given]


def _section_text(doc: FieldDoc, value: Any) -> str:
    """A key's comment; a section's also names the keys it could set but does not."""
    if doc.section is None or not isinstance(value, dict):
        return doc.text
    others = _other_keys(doc.section, value)
    return doc.text + (f" Other keys: {', '.join(others)}." if others else "")


def _key_comments(data: Any, loc: tuple[str | int, ...], model: type[BaseModel], prefix: str,
                  lines: dict[tuple[str | int, ...], int], found: dict[int, list[str]]) -> None:
    """Fill `found` (line -> comment paragraphs) for every key of the mapping `data` at `loc` and below."""
    if not isinstance(data, dict):
        return
    docs = {doc.key: doc for doc in own_docs(model, prefix)}
    for key, value in data.items():
        doc, line = docs.get(str(key)), lines.get((*loc, key))
        if doc is None or line is None:
            continue
        found.setdefault(line, [_section_text(doc, value)])
        if doc.section is None:
            continue
        items = list(enumerate(value)) if doc.items and isinstance(value, list) else [(None, value)]
        for index, item in items:
            where = (*loc, key) if index is None else (*loc, key, index)
            _key_comments(item, where, doc.section, doc.child_prefix, lines, found)


def annotate(text: str, model: type[BaseModel] = JobSpec) -> str:
    """`text`, a spec in YAML, with each key's description as comment lines above the key.

    The comments come from the models, so `dlaunch init`'s starter says what the README says.
    A section's comment also names the keys it could set but does not, and a line above the
    first key the top-level keys the file leaves out. The text's own comments and values stay.
    """
    doc = parse_yaml(text, "starter")
    found: dict[int, list[str]] = {}
    _key_comments(doc.data, (), model, "", doc.lines, found)
    others = _other_keys(model, doc.data if isinstance(doc.data, dict) else {})
    if found and others:
        found[min(found)].insert(0, f"Other top-level keys: {', '.join(others)}.")
    out: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        indent = " " * (len(line) - len(line.lstrip(" ")))
        for paragraph in found.get(number, []):
            out += _comment(paragraph, indent)
        out.append(line)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the spec table, or write it into README.md between its markers."""
    parser = argparse.ArgumentParser(prog="python -m launcher.spec_docs", description=__doc__.splitlines()[0])
    parser.add_argument("--write-readme", nargs="?", const=str(README), metavar="PATH",
                        help="replace the spec table in PATH (default: the repository's README.md)")
    args = parser.parse_args(argv)
    table = markdown_table()
    if args.write_readme is None:
        sys.stdout.write(table)
        return 0
    path = Path(args.write_readme)
    try:
        path.write_text(readme_with_table(path.read_text(encoding="utf-8"), table), encoding="utf-8")
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote the spec table into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
