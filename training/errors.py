"""The one exception type that means "the job is wrong": `ConfigError`.

Restarting cannot fix a wrong spec, unreadable data or an incompatible checkpoint, so a
`ConfigError` is the only exception the worker maps to `exitcodes.CONFIG_ERROR` (see
`training.failure`). Everything else, a plain `ValueError` from torch or a library included,
is treated as a failure that a restart may cure.

It derives from `ValueError` so that callers which caught a bad value before (the planner
reading a model factory, for instance) keep working; the converse does not hold.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """The job, its data or its checkpoints are wrong: the message says which field or file,
    and what to change. The worker exits `exitcodes.CONFIG_ERROR` and nothing retries it."""
