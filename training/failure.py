"""What a worker failure means for the job: fail now, or let a restart try again.

Modelled on Ray Train v2's failure policy (ray/train/v2/_internal/execution/failure_handling/
failure_policy.py: `FailurePolicy.make_decision` returning a `FailureDecision` enum): one small
decision, testable alone, used by both entrypoints. The decision is made on the exception's
type, never on its message: only a `training.errors.ConfigError` stops the job.

Across Ray the decision survives as a type too: Ray Train v2 keeps each worker's original
exception in `WorkerGroupError.worker_failures` (ray/train/v2/_internal/execution/worker_group/
poll.py, `WorkerGroupPollStatus.errors`, which unwraps `UserExceptionWithTraceback._base_exc`),
so the driver applies the same policy to the workers' exceptions.
"""

from __future__ import annotations

from enum import Enum

from training import exitcodes
from training.errors import ConfigError


class FailureDecision(Enum):
    """RAISE: the job is wrong, fail it at once. RETRY: anything else; a restart may succeed."""

    RAISE = "raise"
    RETRY = "retry"


def make_decision(error: BaseException) -> FailureDecision:
    """RAISE for a `ConfigError` (also when it is the cause of a wrapping error), else RETRY."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ConfigError):
            return FailureDecision.RAISE
        seen.add(id(current))
        current = current.__cause__
    return FailureDecision.RETRY


def decision_for_workers(errors: list[BaseException]) -> FailureDecision:
    """The job's decision when several workers failed: a configuration error on any one wins, as
    `training.agent.exit_code_for` does for exit codes (its peers only saw the gang break)."""
    decisions = {make_decision(error) for error in errors}
    return FailureDecision.RAISE if FailureDecision.RAISE in decisions else FailureDecision.RETRY


def exit_code(decision: FailureDecision) -> int:
    """The process exit code for a decision: `CONFIG_ERROR` (not retried) or 1 (retriable)."""
    return exitcodes.CONFIG_ERROR if decision is FailureDecision.RAISE else 1
