"""Pretrained model directories: local paths as they are, s3:// prefixes downloaded once and cached."""

from __future__ import annotations

import hashlib
from pathlib import Path

from training.data.sources import CACHE_DIR
from training.errors import ConfigError


def resolve_pretrained(uri: str, endpoint_url: str | None = None) -> Path:
    """A local directory holding the model's config.json and weights."""
    if uri.startswith("s3://"):
        from training.checkpoint.storage import storage_for

        target = CACHE_DIR / "models" / hashlib.sha256(uri.encode()).hexdigest()[:16]
        if not (target / "config.json").is_file():
            storage_for(uri, endpoint_url=endpoint_url).download_dir(uri, target)
        path = target
    else:
        path = Path(uri.removeprefix("file://"))
    if not (path / "config.json").is_file():
        raise ConfigError(f"pretrained '{uri}' has no config.json: point it at a saved transformers model directory")
    return path
