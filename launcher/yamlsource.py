"""Read YAML while remembering where every key came from, so errors can quote a line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from launcher.errors import SpecError, SpecProblem

Path_ = tuple[str | int, ...]


@dataclass
class YamlDocument:
    """The parsed data of one YAML file and the 1-based line of each key or list item."""

    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int | None:
        """The line of the deepest known prefix of `path` (a missing key points at its parent)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int], problems: list[SpecProblem]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(SpecProblem(
                    path=".".join(str(p) for p in (*path, key)),
                    message=f"duplicate key (first defined on line {seen[key]})",
                    line=line,
                    hint="remove one of the two; YAML would silently keep only the last",
                ))
                continue
            seen[key] = line
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _walk(item, (*path, index), lines, problems)


def parse_yaml(text: str, source: str = "<string>") -> YamlDocument:
    """Parse one YAML document; syntax errors and duplicate keys become a `SpecError`."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise SpecError(
            [SpecProblem(path="(file)", message=f"YAML syntax error: {exc.problem or exc}", line=line,
                         hint="check indentation and quoting around this line")],
            source,
        ) from exc
    except yaml.YAMLError as exc:
        raise SpecError([SpecProblem(path="(file)", message=f"YAML error: {exc}")], source) from exc
    if node is None or data is None:
        raise SpecError([SpecProblem(path="(file)", message="the file is empty",
                                     hint="run `dlaunch init` to write a starter spec")], source)
    lines: dict[Path_, int] = {(): node.start_mark.line + 1}
    problems: list[SpecProblem] = []
    _walk(node, (), lines, problems)
    if problems:
        raise SpecError(problems, source)
    return YamlDocument(data=data, lines=lines)


def read_yaml_file(path: str | Path) -> YamlDocument:
    """Read and parse a spec file; unreadable files become a `SpecError`, not an OSError."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SpecError([SpecProblem(path="(file)", message="file not found",
                                     hint="check the path, or run `dlaunch init` to create one")], source) from exc
    except IsADirectoryError as exc:
        raise SpecError([SpecProblem(path="(file)", message="is a directory, expected a YAML file")], source) from exc
    except PermissionError as exc:
        raise SpecError([SpecProblem(path="(file)", message="permission denied while reading")], source) from exc
    except UnicodeDecodeError as exc:
        raise SpecError([SpecProblem(path="(file)", message=f"not UTF-8 text ({exc.reason})")], source) from exc
    except OSError as exc:
        raise SpecError([SpecProblem(path="(file)", message=f"cannot read: {exc.strerror}")], source) from exc
    return parse_yaml(text, source)
