"""Find and read training text: files, directories, globs (and s3:// prefixes once storage lands).

A `.txt` file contributes one document per paragraph (blank-line separated); a `.jsonl` file
one document per line, taken from `text_field` (and `label_field` for classification).
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path

TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst")
JSONL_SUFFIXES = (".jsonl", ".json")


class DataError(ValueError):
    """The data named by the spec is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class Document:
    text: str
    label: str | None = None


def resolve_files(location: str) -> list[str]:
    """Expand a file, directory (recursive) or glob into a sorted list of readable text files."""
    path = location.removeprefix("file://")
    if "://" in path:
        raise DataError(f"{location}: only local paths are supported for data in this version")
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


def read_documents(location: str, text_field: str = "text", label_field: str | None = None) -> list[Document]:
    """All documents at `location`, in a deterministic order."""
    documents: list[Document] = []
    for path in resolve_files(location):
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
