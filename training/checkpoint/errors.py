"""The exceptions the checkpoint package raises on purpose.

Every message names the URI involved and, where it can, what to do next. The original
client or OS error is always chained (`raise ... from e`) so nothing is lost for debugging.
"""

from __future__ import annotations

from training.errors import ConfigError


class CheckpointError(Exception):
    """Base class: saving, finding or restoring a checkpoint failed."""


class StorageError(CheckpointError):
    """A read, write, list or delete against checkpoint storage (local or S3) failed."""


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """The URI names no object; also a `FileNotFoundError`, so callers may catch either."""


class InvalidUriError(CheckpointError, ConfigError):
    """A storage URI is malformed or unsupported; the message quotes it and the accepted forms. The URI
    comes from the spec, so it is a configuration error (and still a `ValueError`)."""


class IncompatibleCheckpointError(CheckpointError, ConfigError):
    """The job's model differs from the one its checkpoints were written for (architecture, vocabulary
    or labels): resuming cannot work, so it is a configuration error (the worker exits
    `exitcodes.CONFIG_ERROR`, which no restart retries). The message names the difference and how to
    start fresh while keeping the old checkpoints."""
