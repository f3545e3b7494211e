"""Label and field selectors as the Kubernetes API parses them (the subset dlaunch and kubectl use)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]

_SET_REQUIREMENT = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQUALITY = re.compile(r"^\s*([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)([\w./-]+)\s*$")
_TOP_LEVEL_COMMA = re.compile(r",(?![^()]*\))")


class SelectorError(ValueError):
    """The selector does not parse; the server answers 400 Bad Request."""


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return obj.get("metadata", {}).get("labels") or {}


def _requirement(text: str) -> Predicate:
    """One requirement: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` or `!k`."""
    if match := _SET_REQUIREMENT.match(text):
        key, op, values = match.group(1), match.group(2), {v.strip() for v in match.group(3).split(",")}
        if op == "in":
            return lambda obj: _labels(obj).get(key) in values
        return lambda obj: _labels(obj).get(key) not in values
    if match := _EQUALITY.match(text):
        key, op, value = match.groups()
        if op == "!=":
            return lambda obj: _labels(obj).get(key) != value
        return lambda obj: _labels(obj).get(key) == value
    if match := _EXISTS.match(text):
        negate, key = match.group(1) == "!", match.group(2)
        return lambda obj: (key in _labels(obj)) != negate
    raise SelectorError(f"unable to parse requirement: {text!r}")


def label_selector(text: str | None) -> Predicate:
    """A predicate over objects for a label selector; an empty selector matches everything."""
    if not text:
        return lambda obj: True
    requirements = [_requirement(part) for part in _TOP_LEVEL_COMMA.split(text) if part.strip()]
    return lambda obj: all(req(obj) for req in requirements)


def _field(obj: dict[str, Any], path: str) -> str | None:
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return None
        current = current[part]
    return None if current is None else str(current)


def field_selector(text: str | None) -> Predicate:
    """A predicate for `path=value` / `path!=value` field selectors (any dotted path of the object)."""
    if not text:
        return lambda obj: True
    tests: list[Predicate] = []
    for part in text.split(","):
        match = _EQUALITY.match(part)
        if not match:
            raise SelectorError(f"invalid field selector: {part!r}")
        path, op, value = match.groups()
        if op == "!=":
            tests.append(lambda obj, p=path, v=value: _field(obj, p) != v)
        else:
            tests.append(lambda obj, p=path, v=value: _field(obj, p) == v)
    return lambda obj: all(test(obj) for test in tests)
