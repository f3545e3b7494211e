"""`PreparedDataset`: a prepared dataset read by global index, memory-mapped, through the shard cache.

Causal LM: sample i of length `seq_len` is tokens [i*seq_len, (i+1)*seq_len] (seq_len + 1 ids,
inputs and shifted targets) of the concatenated token stream (documents joined by EOS), so one
prepared dataset serves every `seq_len`. Classification: example i is its token ids and label.
A local dataset is read in place (each shard verified against the manifest the first time this
process opens it); an s3:// one through a node-local `ShardCache` that the ranks share.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import shutil
import uuid
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from training.checkpoint.errors import ObjectNotFoundError, StorageError
from training.checkpoint.storage import join_uri, local_path, storage_for
from training.data.prepare.cache import Lease, ShardCache, ShardFile, _sha256
from training.data.prepare.errors import PreparedDataError
from training.data.prepare.run import MANIFEST
from training.data.prepare.tokenize import tokenizer_digest

DEFAULT_CACHE = Path(os.environ.get("DLAUNCH_CACHE", Path.home() / ".cache" / "dlaunch")) / "prepared"


class _OpenShard:
    """One shard mapped into memory: its token stream, megatron-core index and labels."""

    def __init__(self, paths: dict[str, Path], dtype: str, leases: list[Lease]) -> None:
        with warnings.catch_warnings():  # megatron.core warns about optional CUDA extensions at import
            warnings.simplefilter("ignore")
            from megatron.core.datasets.indexed_dataset import IndexedDataset

        prefix = str(paths["bin"])[: -len(".bin")]
        self.index = IndexedDataset(prefix, mmap=True)
        self.tokens = np.memmap(paths["bin"], dtype=dtype, mode="r")
        self.labels = np.load(paths["labels.npy"], mmap_mode="r") if "labels.npy" in paths else None
        self.leases = leases

    def close(self) -> None:
        del self.index, self.tokens, self.labels
        for lease in self.leases:
            lease.release()


class PreparedDataset:
    """A committed prepared dataset at a local path or s3:// prefix."""

    def __init__(self, uri: str, cache_dir: str | Path | None = None, cache_limit: int | None = None,
                 endpoint_url: str | None = None, max_open_shards: int = 4) -> None:
        self.uri = uri.rstrip("/")
        self.remote = self.uri.startswith("s3://")
        self.storage = storage_for(self.uri, endpoint_url=endpoint_url)
        self.manifest = self._read_manifest()
        self.shards: list[dict[str, Any]] = self.manifest["shards"]
        self._first_token = [s["first_token"] for s in self.shards]
        self._first_document = [s["first_document"] for s in self.shards]
        root = Path(cache_dir) if cache_dir else DEFAULT_CACHE / hashlib.sha256(self.uri.encode()).hexdigest()[:16]
        self.cache = ShardCache(root / "shards", cache_limit, self.storage, self.uri) if self.remote else None
        self._cache_root = root
        self._open: OrderedDict[int, _OpenShard] = OrderedDict()
        self._verified: set[str] = set()
        self.max_open_shards = max_open_shards

    def _read_manifest(self) -> dict[str, Any]:
        uri = join_uri(self.uri, MANIFEST)
        try:
            return json.loads(self.storage.read_bytes(uri))
        except ObjectNotFoundError as exc:
            raise PreparedDataError(f"{self.uri} is not a committed prepared dataset (no {MANIFEST}): run "
                                    f"`dlaunch prepare` into it, or let an interrupted one finish") from exc
        except (StorageError, json.JSONDecodeError) as exc:
            raise PreparedDataError(f"{uri}: cannot read the manifest ({exc})") from exc

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def num_tokens(self) -> int:
        return self.manifest["tokens"]

    @property
    def num_documents(self) -> int:
        return self.manifest["documents"]

    @property
    def eos_id(self) -> int | None:
        return self.manifest["tokenizer"]["eos_id"]

    @property
    def label_map(self) -> list[str]:
        return self.manifest["label_map"]

    def tokenizer_dir(self) -> Path:
        """A local directory with the dataset's tokenizer, checked against the manifest's hash."""
        remote_dir = join_uri(self.uri, self.manifest["tokenizer"]["dir"])
        if self.remote:
            local = self._cache_root / f"tokenizer-{self.manifest['tokenizer']['sha256'][:16]}"
            if not local.is_dir():
                self._download_tokenizer(remote_dir, local)
        else:
            local = local_path(remote_dir)
        if tokenizer_digest(local) != self.manifest["tokenizer"]["sha256"]:
            raise PreparedDataError(f"the tokenizer at {remote_dir} does not match the manifest of {self.uri} "
                                    f"(sha256 differs); prepare the dataset again")
        return local

    def _download_tokenizer(self, remote_dir: str, local: Path) -> None:
        """Download into a private directory, then rename it into place: the ranks of a node may race
        here, and none of them must see a half-downloaded tokenizer (the loser drops its copy)."""
        staging = local.with_name(f".{local.name}.{uuid.uuid4().hex}")
        try:
            self.storage.download_dir(remote_dir, staging)
            os.rename(staging, local)
        except OSError:
            if not local.is_dir():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def document(self, i: int) -> np.ndarray:
        """The token ids of document i (causal LM: ending with EOS)."""
        k = self._locate(self._first_document, i, self.num_documents, "document")
        return np.asarray(self._shard(k).index[i - self._first_document[k]], dtype=np.int64)

    def num_samples(self, seq_len: int) -> int:
        """How many windows of `seq_len` inputs (plus one shifted target) the token stream holds."""
        return max(0, (self.num_tokens - 1) // seq_len)

    def sample(self, i: int, seq_len: int) -> np.ndarray:
        """Tokens [i*seq_len, (i+1)*seq_len] of the stream: seq_len + 1 ids, across shards if need be."""
        if not 0 <= i < self.num_samples(seq_len):
            raise IndexError(f"sample {i} out of range: {self.num_samples(seq_len)} samples of seq_len {seq_len}")
        start, stop, pieces = i * seq_len, (i + 1) * seq_len + 1, []
        while start < stop:
            k = self._locate(self._first_token, start, self.num_tokens, "token")
            offset = start - self._first_token[k]
            piece = self._shard(k).tokens[offset: offset + stop - start]
            pieces.append(np.asarray(piece, dtype=np.int64))
            start += len(piece)
        return np.concatenate(pieces)

    @property
    def num_examples(self) -> int:
        return self.num_documents

    def example(self, i: int) -> tuple[np.ndarray, int]:
        """Classification: the token ids of example i and its label (index into `label_map`)."""
        if self.task != "classification":
            raise PreparedDataError(f"{self.uri} was prepared for {self.task}, not classification")
        k = self._locate(self._first_document, i, self.num_documents, "example")
        shard = self._shard(k)
        local = i - self._first_document[k]
        name = self.shards[k]["label_names"][int(shard.labels[local])]
        return np.asarray(shard.index[local], dtype=np.int64), self.label_map.index(name)

    def _locate(self, firsts: list[int], value: int, total: int, what: str) -> int:
        if not 0 <= value < total:
            raise IndexError(f"{what} {value} out of range: {self.uri} has {total}")
        return bisect.bisect_right(firsts, value) - 1  # the last shard starting at or before it: never an empty one

    def _shard(self, k: int) -> _OpenShard:
        """Shard k, mapped; the least recently used open shard is closed past `max_open_shards`."""
        if k in self._open:
            self._open.move_to_end(k)
            return self._open[k]
        while len(self._open) >= self.max_open_shards:
            self._open.popitem(last=False)[1].close()
        paths, leases = self._fetch(self.shards[k])
        self._open[k] = _OpenShard(paths, self.manifest["dtype"], leases)
        return self._open[k]

    def _fetch(self, shard: dict[str, Any]) -> tuple[dict[str, Path], list[Lease]]:
        paths, leases = {}, []
        for name, meta in sorted(shard["files"].items()):
            file = ShardFile(name, join_uri(self.uri, "shards", name), meta["size"], meta["sha256"])
            if self.cache is not None:
                leases.append(self.cache.acquire(file))
                path = leases[-1].path
            else:
                path = self._verified_local(file)
            paths[name.split(".", 1)[1]] = path
        return paths, leases

    def _verified_local(self, file: ShardFile) -> Path:
        path = local_path(file.uri)
        if file.name not in self._verified:
            if not path.is_file():
                raise PreparedDataError(f"shard {file.name} of {self.uri} is missing: {path} does not exist; "
                                        f"prepare the dataset again")
            if path.stat().st_size != file.size or _sha256(path) != file.sha256:
                raise PreparedDataError(f"shard {file.name} of {self.uri} is corrupt: {path} does not match the "
                                        f"size and sha256 in the manifest; prepare the dataset again")
            self._verified.add(file.name)
        return path

    def close(self) -> None:
        """Unmap every open shard and release its cache leases."""
        while self._open:
            self._open.popitem()[1].close()
