"""Documents streamed out of the corpus files: .txt, .jsonl(.gz/.zst) and Parquet, local or s3://.

A file is read front to back as a stream (an S3 object through one GET, never downloaded first;
a Parquet file a row group at a time). A `.txt` file gives one document per paragraph, as the
raw-text path does (`training.data.sources`); a JSON-lines record or Parquet row gives one.
Every document carries its file and line (or row), so a bad one is named exactly.
"""

from __future__ import annotations

import glob
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from training.data.prepare.errors import PreparedDataError

SUFFIXES = (".txt", ".text", ".md", ".rst", ".jsonl", ".json", ".jsonl.gz", ".jsonl.zst", ".parquet")


@dataclass(frozen=True)
class SourceFile:
    """One input file: its URI (local path or s3://) and size in bytes."""

    uri: str
    size: int


@dataclass(frozen=True)
class Record:
    """One document (or classification example) and where it came from."""

    text: str
    label: str | None
    where: str


@dataclass
class BadLines:
    """Lines skipped under `skip_bad_lines`: how many, and the first few for the report."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append(message)


def is_source(name: str) -> bool:
    return name.lower().endswith(SUFFIXES)


def list_sources(inputs: list[str], endpoint_url: str | None = None) -> list[SourceFile]:
    """Every source file the inputs name, with sizes, sorted and without duplicates."""
    found: dict[str, int] = {}
    for location in inputs:
        files = _list_s3(location, endpoint_url) if location.startswith("s3://") else _list_local(location)
        if not files:
            raise PreparedDataError(f"{location}: matched no {', '.join(SUFFIXES)} files")
        found.update(files)
    return [SourceFile(uri, size) for uri, size in sorted(found.items())]


def _list_local(location: str) -> dict[str, int]:
    path = location.removeprefix("file://")
    if "://" in path:
        raise PreparedDataError(f"{location}: inputs are local paths, file:// or s3:// URIs")
    if glob.has_magic(path):
        candidates = [Path(p) for p in glob.glob(path, recursive=True)]
    elif os.path.isdir(path):
        candidates = list(Path(path).rglob("*"))
    elif os.path.isfile(path):
        candidates = [Path(path)]
    else:
        raise PreparedDataError(f"{location}: no such file or directory")
    return {str(p): p.stat().st_size for p in candidates if p.is_file() and is_source(p.name)}


def _list_s3(location: str, endpoint_url: str | None) -> dict[str, int]:
    from training.checkpoint.errors import StorageError
    from training.checkpoint.storage import join_uri, storage_for

    storage = storage_for(location, endpoint_url=endpoint_url)
    try:
        if is_source(location) and storage.isfile(location):
            return {location: storage.size(location)}
        return {join_uri(location, key): storage.size(join_uri(location, key))
                for key in storage.list(location) if is_source(key)}
    except StorageError as exc:
        raise PreparedDataError(f"{location}: {exc}") from exc


def s3_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client for the endpoint `training.checkpoint.storage.S3Storage` would use."""
    import boto3
    from botocore.config import Config

    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    config = Config(retries={"mode": "standard", "max_attempts": 8},
                    s3={"addressing_style": "path"} if endpoint else None)
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)


def open_binary(uri: str, endpoint_url: str | None = None) -> IO[bytes]:
    """A readable byte stream of the file, decompressed for .gz and .zst."""
    from training.checkpoint.storage import parse_s3_uri

    try:
        if uri.startswith("s3://"):
            bucket, key = parse_s3_uri(uri)
            body = s3_client(endpoint_url).get_object(Bucket=bucket, Key=key)["Body"]
            raw: IO[bytes] = io.BufferedReader(_BodyReader(body), buffer_size=1 << 20)
        else:
            raw = open(uri, "rb")  # noqa: SIM115 (closed by the caller's `with`)
    except Exception as exc:  # boto3 and OS errors alike: the file cannot be opened
        raise PreparedDataError(f"{uri}: cannot open ({exc})") from exc
    name = uri.lower()
    if name.endswith(".gz"):
        import gzip

        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    if name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)  # type: ignore[return-value]
    return raw


class _BodyReader(io.RawIOBase):
    """A boto3 response body as a raw stream, so the standard buffered and text layers can wrap it."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


def read_records(source: SourceFile, text_field: str, label_field: str | None, bad: BadLines | None,
                 endpoint_url: str | None = None) -> Iterator[Record]:
    """The documents of one file, in order; a bad line raises (naming file and line) or is counted in `bad`."""
    name = source.uri.lower()
    if name.endswith(".parquet"):
        yield from _parquet_records(source.uri, text_field, label_field, endpoint_url)
        return
    with open_binary(source.uri, endpoint_url) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline=None)
        if name.endswith((".jsonl", ".json", ".jsonl.gz", ".jsonl.zst")):
            yield from _jsonl_records(source.uri, text, text_field, label_field, bad)
        else:
            yield from _paragraph_records(source.uri, text)


def _paragraph_records(uri: str, lines: IO[str]) -> Iterator[Record]:
    """Blank-line separated paragraphs, whitespace collapsed (as `training.data.sources._paragraphs`)."""
    block: list[str] = []
    start = 1
    for number, line in enumerate(lines, start=1):
        if line.strip():
            if not block:
                start = number
            block.append(line)
            continue
        if block:
            yield Record(" ".join("".join(block).split()), None, f"{uri}:{start}")
            block = []
    if block:
        yield Record(" ".join("".join(block).split()), None, f"{uri}:{start}")


def _jsonl_records(uri: str, lines: IO[str], text_field: str, label_field: str | None,
                   bad: BadLines | None) -> Iterator[Record]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield _json_record(line, text_field, label_field, f"{uri}:{number}")
        except PreparedDataError as exc:
            if bad is None:
                raise
            bad.add(str(exc))


def _json_record(line: str, text_field: str, label_field: str | None, where: str) -> Record:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise PreparedDataError(f"{where}: not valid JSON ({exc.msg}); fix the line or set "
                                f"skip_bad_lines: true to count and skip such lines") from exc
    for name in (text_field, label_field):
        if name is not None and (not isinstance(record, dict) or name not in record):
            raise PreparedDataError(f"{where}: no field '{name}' (set text_field/label_field in the data spec, "
                                    f"or skip_bad_lines: true)")
    label = None if label_field is None else str(record[label_field])
    return Record(str(record[text_field]), label, where)


def _parquet_records(uri: str, text_field: str, label_field: str | None,
                     endpoint_url: str | None) -> Iterator[Record]:
    """Rows of a Parquet file, one row group at a time (S3 through ranged reads, never a full download)."""
    import pyarrow.parquet as pq

    with _parquet_file(uri, endpoint_url) as handle:
        try:
            parquet = pq.ParquetFile(handle)
        except Exception as exc:  # pyarrow raises ArrowInvalid and OSError subclasses
            raise PreparedDataError(f"{uri}: not a readable Parquet file ({exc})") from exc
        columns = [c for c in (text_field, label_field) if c is not None]
        missing = [c for c in columns if c not in parquet.schema_arrow.names]
        if missing:
            raise PreparedDataError(f"{uri}: no column {missing[0]!r} (columns: {parquet.schema_arrow.names}); "
                                    f"set text_field/label_field in the data spec")
        row = 0
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=columns).to_pydict()
            labels = table.get(label_field) if label_field else None
            for i, text in enumerate(table[text_field]):
                row += 1
                yield Record("" if text is None else str(text), None if labels is None else str(labels[i]),
                             f"{uri}:row {row}")


def _parquet_file(uri: str, endpoint_url: str | None) -> Any:
    if not uri.startswith("s3://"):
        return open(uri, "rb")
    import pyarrow.fs

    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    scheme, _, host = (endpoint or "").partition("://")
    filesystem = pyarrow.fs.S3FileSystem(endpoint_override=host or None, scheme=scheme or "https",
                                         region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    return filesystem.open_input_file(uri.removeprefix("s3://"))
