"""A node-local shard cache shared by the ranks of a node: bounded, LRU, one download per shard.

Every rank of a node opens the same directory. Three kinds of `fcntl` file locks keep them apart:
- `<file>.fetch` (exclusive) while one rank downloads a shard, so the others wait and reuse it;
- `<file>.use` (shared) while a rank has the shard open, so nobody evicts it under a reader;
- `.evict` (exclusive) while a rank evicts least-recently-used shards (by mtime, touched on use)
  that no rank holds, until the new shard fits under the limit.
A download lands in a temp file, is checked against the manifest's size and sha256, and is
renamed into place, so a cached file is always a verified one. When every cached shard is in use
the cache may exceed its limit by the shards being read, rather than fail a reader.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from training.checkpoint.errors import ObjectNotFoundError, StorageError
from training.checkpoint.storage import Storage
from training.data.prepare.errors import PreparedDataError

_LOCK_SUFFIXES = (".fetch", ".use")
_EVICT = ".evict"


@dataclass(frozen=True)
class ShardFile:
    """One file of a shard as the manifest lists it."""

    name: str
    uri: str
    size: int
    sha256: str


class Lease:
    """A shard file held open by this process (a shared lock on `<file>.use`); `release` ends it."""

    def __init__(self, path: Path, handle: IO[bytes]) -> None:
        self.path, self._handle = path, handle

    def release(self) -> None:
        if not self._handle.closed:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()


class ShardCache:
    """Shard files of one dataset under `directory`, at most about `limit` bytes of them."""

    def __init__(self, directory: Path, limit: int | None, storage: Storage, dataset_uri: str) -> None:
        self.directory, self.limit, self.storage, self.dataset_uri = Path(directory), limit, storage, dataset_uri
        self.directory.mkdir(parents=True, exist_ok=True)
        self.downloads = 0

    def acquire(self, shard: ShardFile) -> Lease:
        """The local path of a verified copy of the shard file, held until `release`."""
        path = self.directory / shard.name
        use = open(f"{path}.use", "ab")  # noqa: SIM115 (closed by Lease.release)
        fcntl.flock(use, fcntl.LOCK_SH)
        with open(f"{path}.fetch", "ab") as fetch:
            fcntl.flock(fetch, fcntl.LOCK_EX)
            if not (path.is_file() and path.stat().st_size == shard.size):
                self._make_room(shard.size)
                self._download(shard, path)
        os.utime(path)
        return Lease(path, use)

    def _download(self, shard: ShardFile, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            self.storage.download_file(shard.uri, tmp)
            size, digest = tmp.stat().st_size, _sha256(tmp)
            if (size, digest) != (shard.size, shard.sha256):
                raise PreparedDataError(
                    f"shard {shard.name} of {self.dataset_uri} is corrupt: {shard.uri} has {size} bytes, sha256 "
                    f"{digest[:12]}…; the manifest says {shard.size} bytes, {shard.sha256[:12]}…; prepare the "
                    f"dataset again")
            os.replace(tmp, path)
            self.downloads += 1
        except ObjectNotFoundError as exc:
            raise PreparedDataError(f"shard {shard.name} of {self.dataset_uri} is missing: {shard.uri} does not "
                                    f"exist; prepare the dataset again") from exc
        except StorageError as exc:
            raise PreparedDataError(f"shard {shard.name} of {self.dataset_uri}: cannot fetch {shard.uri} ({exc})") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def _make_room(self, incoming: int) -> None:
        """Evict least recently used shard files that no process holds until `incoming` bytes fit."""
        if self.limit is None:
            return
        with open(self.directory / _EVICT, "ab") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            cached = sorted(self.cached(), key=lambda p: p.stat().st_mtime)
            total = sum(p.stat().st_size for p in cached)
            for path in cached:
                if total + incoming <= self.limit:
                    break
                size = path.stat().st_size
                if self._evict(path):
                    total -= size

    def _evict(self, path: Path) -> bool:
        """Delete the file unless some process holds it (its `.use` lock); True if deleted."""
        with open(f"{path}.use", "ab") as use:
            try:
                fcntl.flock(use, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            path.unlink(missing_ok=True)
            fcntl.flock(use, fcntl.LOCK_UN)
        return True

    def cached(self) -> list[Path]:
        """The shard files in the cache now (no lock or temp files)."""
        return [p for p in self.directory.iterdir()
                if p.is_file() and not p.name.startswith(".") and not p.name.endswith(_LOCK_SUFFIXES)]

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.cached())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()
