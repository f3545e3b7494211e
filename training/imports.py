"""Load user code named as `package.module:attribute` in a spec (model factories, entrypoints)."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from training.errors import ConfigError


def load_object(reference: str, what: str) -> Any:
    """Import `module:attribute`; the working directory is importable, as for `python -m`."""
    module_name, _, attribute = reference.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what} '{reference}': cannot import module '{module_name}' ({exc}); "
                         "install it in the worker image or run from the directory that contains it") from exc
    try:
        value = getattr(module, attribute)
    except AttributeError as exc:
        raise ConfigError(f"{what} '{reference}': module '{module_name}' has no attribute '{attribute}'") from exc
    if not callable(value):
        raise ConfigError(f"{what} '{reference}' is not callable")
    return value
