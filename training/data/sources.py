"""Find and read training text: files, directories, globs (and s3:// prefixes once storage lands).

A `.txt` file contributes one document per paragraph (blank-line separated); a `.jsonl` file
one document per line, taken from `text_field` (and `label_field` for classification).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from training.errors import ConfigError

CACHE_DIR = Path(os.environ.get("DLAUNCH_CACHE", Path.home() / ".cache" / "dlaunch"))
TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst")
JSONL_SUFFIXES = (".jsonl", ".json")


class DataError(ConfigError):
    """The data named by the spec is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class Document:
    text: str
    label: str | None = None


def fetch_s3_prefix(uri: str, endpoint_url: str | None = None) -> str:
    """Download every object under an s3:// prefix (or one object) into the local cache, once."""
    from training.checkpoint.errors import StorageError
    from training.checkpoint.storage import join_uri, storage_for

    storage = storage_for(uri, endpoint_url=endpoint_url)
    target = CACHE_DIR / "data" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    try:
        if storage.isfile(uri):
            local = target / uri.rstrip("/").rsplit("/", 1)[-1]
            if not local.is_file():
                storage.download_file(uri, local)
            return str(local)
        keys = [key for key in storage.list(uri) if _is_data_file(key)]
        check_raw_size(uri, [storage.size(join_uri(uri, key)) for key in keys])
        for key in keys:
            if not (target / key).is_file():
                storage.download_file(join_uri(uri, key), target / key)
    except StorageError as exc:
        raise DataError(f"{uri}: {exc}") from exc
    return str(target)


def resolve_files(location: str, endpoint_url: str | None = None) -> list[str]:
    """Expand a file, directory (recursive), glob or s3:// prefix into a sorted list of text files."""
    path = location.removeprefix("file://")
    if path.startswith("s3://"):
        path = fetch_s3_prefix(path, endpoint_url)
    elif "://" in path:
        raise DataError(f"{location}: data must be a local path, file:// or s3:// URI")
    if glob.has_magic(path):
        candidates = glob.glob(path, recursive=True)
    elif os.path.isdir(path):
        candidates = [str(p) for p in Path(path).rglob("*") if p.is_file()]
    elif os.path.isfile(path):
        candidates = [path]
    else:
        raise DataError(f"{location}: no such file or directory")
    files = sorted(f for f in candidates if os.path.isfile(f) and _is_data_file(f))
    if not files:
        raise DataError(f"{location}: matched no .txt or .jsonl files")
    return files


def _is_data_file(path: str) -> bool:
    name = path.lower()
    return name.endswith(TEXT_SUFFIXES + JSONL_SUFFIXES)


def _paragraphs(text: str) -> list[str]:
    blocks = [" ".join(block.split()) for block in text.split("\n\n")]
    return [b for b in blocks if b]


def _jsonl_documents(path: str, text_field: str, label_field: str | None) -> list[Document]:
    docs = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
            if not isinstance(record, dict) or text_field not in record:
                raise DataError(f"{path}:{number}: no field '{text_field}' (set training.data.text_field)")
            label = None
            if label_field is not None:
                if label_field not in record:
                    raise DataError(f"{path}:{number}: no field '{label_field}' (set training.data.label_field)")
                label = str(record[label_field])
            docs.append(Document(text=str(record[text_field]), label=label))
    return docs


def check_raw_size(location: str, sizes: list[int]) -> None:
    """The raw-text path reads everything on every rank: refuse more than `RAW_TEXT_LIMIT_MB`."""
    from training.config import RAW_TEXT_LIMIT_MB

    megabytes = sum(sizes) / 1e6
    if megabytes > RAW_TEXT_LIMIT_MB:
        raise DataError(f"training.data: {location} holds {megabytes:,.0f} MB of raw text, above the "
                        f"{RAW_TEXT_LIMIT_MB} MB the raw-text path reads (every rank would tokenize all of it into "
                        f"memory): run `dlaunch prepare DATA_SPEC` on it and set training.data.prepared")


def read_documents(location: str, text_field: str = "text", label_field: str | None = None,
                   endpoint_url: str | None = None) -> list[Document]:
    """All documents at `location`, in a deterministic order (at most `RAW_TEXT_LIMIT_MB` of files)."""
    documents: list[Document] = []
    files = resolve_files(location, endpoint_url)
    check_raw_size(location, [os.path.getsize(f) for f in files])
    for path in files:
        if path.lower().endswith(JSONL_SUFFIXES):
            documents.extend(_jsonl_documents(path, text_field, label_field))
        else:
            try:
                text = Path(path).read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise DataError(f"{path}: cannot read ({exc.strerror})") from exc
            documents.extend(Document(text=p) for p in _paragraphs(text))
    if not documents:
        raise DataError(f"{location}: contains no text")
    return documents
