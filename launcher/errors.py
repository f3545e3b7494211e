"""The exceptions dlaunch raises on purpose. The CLI prints these without a traceback."""

from __future__ import annotations

from dataclasses import dataclass


class DlaunchError(Exception):
    """Base class: the message says what went wrong and what to do next."""

    exit_code = 1


@dataclass(frozen=True)
class SpecProblem:
    """One problem in a job spec, located by field path and YAML line."""

    path: str
    message: str
    line: int | None = None
    value: str | None = None
    hint: str | None = None

    def render(self, source: str = "") -> str:
        where = f"{source}:{self.line}" if self.line else source
        head = f"{where}: {self.path}" if where else self.path
        text = f"{head}: {self.message}"
        if self.value is not None:
            text += f" (got {self.value})"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


class SpecError(DlaunchError):
    """The job spec is invalid; carries every problem found, not just the first."""

    exit_code = 2

    def __init__(self, problems: list[SpecProblem], source: str = "") -> None:
        self.problems = problems
        self.source = source
        super().__init__("\n".join(p.render(source) for p in problems))


class PlanError(DlaunchError):
    """The job cannot be laid out on the requested resources."""

    exit_code = 2


class SubmitError(DlaunchError):
    """Starting or running the job failed."""


class NotSupportedYet(DlaunchError):
    """A valid spec asks for a capability this version does not implement."""

    exit_code = 2
