"""The one error type of prepared data: bad sources, a missing or corrupt shard, a bad spec."""

from __future__ import annotations

from training.data.sources import DataError
from training.errors import ConfigError


class PreparedDataError(DataError, ConfigError):
    """The corpus or a prepared dataset is wrong: the message names the file and line, or the shard
    and the dataset URI, and what to do. A `ConfigError`, so a worker exits without a restart that
    could not help; also the raw-text path's `DataError`, so callers catching that still catch it."""
