"""Read YAML while remembering where every key came from, so errors can quote a line.

Whatever its shape, a spec is accepted or refused within a second and a few MB. YAML aliases
let a few hundred bytes stand for billions of values (the "billion laughs" shape), and every
later step (line map, pydantic, hashing) walks the expanded tree; deep nesting exhausts the
stack. So the document is capped in size, and while it is composed each node's expanded size
and depth (aliases counted as what they stand for) is kept, refusing the first node that
crosses a limit, with its line.

The events come from libyaml (PyYAML's `CParser`) where PyYAML was built with it; the nodes are
composed here in Python, where the limits are counted. Refusing an 80,000-item list took 0.236 s
with PyYAML's pure-Python scanner and 0.082 s with libyaml's; the quickstart spec parses in 0.6 ms
instead of 3.6 ms, into the same data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from launcher.errors import SpecError, SpecProblem

Path_ = tuple[str | int, ...]

# A full spec (docs/cluster.reference.yaml) is about 4 KB, 300 nodes and 5 levels deep.
MAX_BYTES = 256 * 1024
MAX_NODES = 10_000
MAX_DEPTH = 40
LIMIT_HINT = "a job spec needs a few hundred values; write repeated values out instead of nesting aliases"


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


class YamlLimitError(yaml.MarkedYAMLError):
    """The document is larger or deeper than any spec, once its aliases are expanded."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


if yaml.__with_libyaml__:
    class _SafeLoader(Composer, yaml.cyaml.CParser, SafeConstructor, Resolver):
        """`yaml.CSafeLoader` with PyYAML's Python `Composer` ahead of `CParser` among the bases:
        libyaml makes the events, Python composes the nodes (so `compose_node` below is called)."""

        def __init__(self, stream: str) -> None:
            yaml.cyaml.CParser.__init__(self, stream)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            Composer.__init__(self)
else:  # a PyYAML built without libyaml: the pure-Python loader, about 3 times slower
    _SafeLoader = yaml.SafeLoader  # type: ignore[misc,assignment]


class BoundedLoader(_SafeLoader):
    """PyYAML's safe loader, counting expanded nodes and depth while it composes.

    `expanded` is the size of the document with every alias replaced by what it stands for;
    it only grows, so the node that crosses `MAX_NODES` is refused before anything is built
    from it. A recursive alias (an anchor used inside itself) has no finite expansion.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.expanded = 0
        self._depth = 0
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, expanded depth)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            return self._compose_alias(parent, index)
        mark = self.peek_event().start_mark
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YamlLimitError(problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=mark)
        self._count(1, mark)
        node = super().compose_node(parent, index)
        self._depth -= 1
        children = [self._sizes[id(child)] for child in _children(node)]
        self._sizes[id(node)] = (1 + sum(size for size, _ in children), 1 + max((d for _, d in children), default=0))
        return node

    def _compose_alias(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        mark = self.peek_event().start_mark
        node = super().compose_node(parent, index)
        if id(node) not in self._sizes:
            raise YamlLimitError(problem="an alias refers to its own anchor (a recursive structure)",
                                 problem_mark=mark)
        size, depth = self._sizes[id(node)]
        if self._depth + depth > MAX_DEPTH:
            raise YamlLimitError(problem=f"this alias nests the document more than {MAX_DEPTH} levels deep",
                                 problem_mark=mark)
        self._count(size, mark)
        return node

    def _count(self, nodes: int, mark: yaml.Mark) -> None:
        self.expanded += nodes
        if self.expanded > MAX_NODES:
            raise YamlLimitError(problem=f"the document expands to more than {MAX_NODES:,} values here "
                                 "(aliases counted as what they stand for)", problem_mark=mark)


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


def _compose(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The node tree and the data of one YAML document, within the limits above."""
    if len(text) > MAX_BYTES:
        raise _too_long(f"{len(text):,} characters", source)
    loader = BoundedLoader(text)
    try:
        node = loader.get_single_node()
        return node, None if node is None else loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        # libyaml scans up to 1,024 characters ahead for a simple key (src/scanner.c
        # `yaml_parser_stale_simple_keys`) and refuses a 1,001st open flow collection itself
        # (`yaml_parser_increase_flow_level`), before the composer reaches MAX_DEPTH.
        if "maximum nesting depth" in str(exc.problem):
            raise YamlLimitError(problem=f"nested more than {MAX_DEPTH} levels deep",
                                 problem_mark=exc.problem_mark) from exc
        raise
    finally:
        loader.dispose()


def _syntax_problem(exc: yaml.MarkedYAMLError) -> SpecProblem:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else None
    if isinstance(exc, YamlLimitError):
        return SpecProblem(path="(file)", message=f"refused: {exc.problem}", line=line, hint=LIMIT_HINT)
    return SpecProblem(path="(file)", message=f"YAML syntax error: {exc.problem or exc}", line=line,
                       hint="check indentation and quoting around this line")


def parse_yaml(text: str, source: str = "<string>") -> YamlDocument:
    """Parse one YAML document; syntax errors, duplicate keys and oversized documents become a `SpecError`."""
    try:
        node, data = _compose(text, source)
    except yaml.MarkedYAMLError as exc:
        raise SpecError([_syntax_problem(exc)], source) from exc
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


def _too_long(size: str, source: str) -> SpecError:
    return SpecError([SpecProblem(path="(file)", message=f"is {size} long; a spec may have at most "
                                  f"{MAX_BYTES:,} characters", hint=LIMIT_HINT)], source)


def _read_text(path: Path) -> str:
    """The file's text; a file over `MAX_BYTES` is refused after reading just past the limit."""
    with path.open("rb") as stream:
        data = stream.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise _too_long(f"more than {MAX_BYTES:,} bytes", str(path))
    return data.decode("utf-8")


def read_yaml_file(path: str | Path) -> YamlDocument:
    """Read and parse a spec file; unreadable files become a `SpecError`, not an OSError."""
    source = str(path)
    try:
        text = _read_text(Path(path))
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
