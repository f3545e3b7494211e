"""The commit protocol over `Storage`: upload markers, the manifest, `latest`, retention.

Layout under a job's checkpoint root (a local path, file:// or s3:// URI):

    step-<N>/<files>                     every rank's DeepSpeed shards and rank-<r>.pt
    step-<N>/uploaded/rank-<r>.json      rank r's upload marker: the files it uploaded, or its error
    step-<N>/manifest.json               written last, by rank 0, once every rank's marker is in
    latest                               "step-<N>", rewritten only after that manifest

A checkpoint exists for readers only when its manifest exists and every file it lists has the
listed size and sha256. Anything else under a step prefix is an unfinished attempt: it is never
loaded, and it is deleted by the next save of that step or once a newer checkpoint commits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from training.checkpoint.errors import CheckpointError, ObjectNotFoundError, StorageError
from training.checkpoint.storage import Storage, join_uri

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LATEST = "latest"
STEP_PREFIX = "step-"
UPLOADS = "uploaded"
# `step-<N>.universal/`: a checkpoint converted for another world size (training.checkpoint.universal).
UNIVERSAL_SUFFIX = ".universal"
FORMAT_VERSION = 1
# The manifest's own fields; component states and extra fields are stored beside them.
MANIFEST_KEYS = frozenset({"format", "step", "world_size", "token", "created_at", "rng", "files", "timings"})
_READ_CHUNK = 4 * 1024 * 1024


class CommitAborted(CheckpointError):
    """A checkpoint was not committed: a rank's upload failed, timed out or was abandoned."""


def step_name(step: int) -> str:
    """`step-<N>`: the name of a step's prefix and the content of `latest`."""
    return f"{STEP_PREFIX}{step}"


def step_of(name: str) -> int | None:
    """The step a `step-<N>` name stands for, or None for any other name."""
    suffix = name.strip().removeprefix(STEP_PREFIX)
    return int(suffix) if name.strip().startswith(STEP_PREFIX) and suffix.isdigit() else None


def step_uri(root: str, step: int) -> str:
    return join_uri(root, step_name(step))


def hash_file(path: Path) -> tuple[int, str]:
    """Size and sha256 of a local file, read in large chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def write_json(storage: Storage, uri: str, value: Any) -> None:
    storage.write_bytes(uri, json.dumps(value, indent=1, sort_keys=True).encode("utf-8"))


def read_json(storage: Storage, uri: str) -> Any:
    """The parsed object; `CheckpointError` if it is not JSON (a missing one raises `ObjectNotFoundError`)."""
    data = storage.read_bytes(uri)
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{uri} is not valid JSON: {e}") from e


# ---- writer side: markers, manifest, latest --------------------------------------------------


def write_marker(storage: Storage, root: str, step: int, rank: int, token: str, **fields: Any) -> None:
    """Record that `rank` finished uploading its files for this save attempt (`token`), or why it failed."""
    uri = join_uri(step_uri(root, step), UPLOADS, f"rank-{rank}.json")
    write_json(storage, uri, {"rank": rank, "step": step, "token": token, **fields})


def read_markers(storage: Storage, root: str, step: int, token: str) -> dict[int, dict[str, Any]]:
    """The markers of this save attempt, by rank; markers of other attempts are ignored."""
    prefix = join_uri(step_uri(root, step), UPLOADS)
    markers = {}
    for key in storage.list(prefix):
        try:
            marker = read_json(storage, join_uri(prefix, key))
        except ObjectNotFoundError:  # deleted since the listing: another attempt's, being cleared
            continue
        if marker.get("token") == token:
            markers[int(marker["rank"])] = marker
    return markers


def await_markers(storage: Storage, root: str, step: int, world: int, token: str, timeout_s: float,
                  pause: Callable[[float], str | None] | None = None) -> dict[int, dict[str, Any]]:
    """Wait until every rank's marker is in; raise `CommitAborted` on a failed rank, timeout or abort.

    `pause(seconds)` sleeps between polls and returns a reason to give up (or None to go on).
    """
    pause = pause or (lambda seconds: time.sleep(seconds))
    deadline, delay = time.monotonic() + timeout_s, 0.02
    while True:
        markers = read_markers(storage, root, step, token)
        failed = {r: m["error"] for r, m in markers.items() if m.get("error")}
        if failed:
            rank, error = min(failed.items())
            raise CommitAborted(f"rank {rank} could not upload {step_name(step)}: {error}")
        if len(markers) >= world:
            return markers
        missing = sorted(set(range(world)) - set(markers))
        if time.monotonic() > deadline:
            raise CommitAborted(f"ranks {missing} did not upload {step_name(step)} within {timeout_s:g} s")
        reason = pause(delay)
        if reason:
            raise CommitAborted(f"{step_name(step)} abandoned: {reason}")
        delay = min(delay * 1.5, 0.5)


def build_manifest(step: int, world: int, token: str, markers: dict[int, dict[str, Any]],
                   states: dict[str, Any], extra: dict[str, Any], stage_s: float) -> dict[str, Any]:
    """The manifest of a checkpoint whose ranks uploaded `markers`: files, sizes, sha256, RNG, and
    each component's state under its own name (`sampler`, `early_stopping`)."""
    files: dict[str, dict[str, Any]] = {}
    for rank in sorted(markers):
        for entry in markers[rank]["files"]:
            if entry["path"] in files:
                raise CheckpointError(f"{step_name(step)}: ranks wrote the same file {entry['path']}")
            files[entry["path"]] = entry
    return {
        **extra,
        "format": FORMAT_VERSION,
        "step": step,
        "world_size": world,
        "token": token,
        "created_at": time.time(),
        **states,
        "rng": {str(rank): markers[rank].get("rng") for rank in sorted(markers)},
        "files": [files[path] for path in sorted(files)],
        "timings": {"stage_s": stage_s, "upload_s": max(m.get("seconds", 0.0) for m in markers.values())},
    }


def commit(storage: Storage, root: str, manifest: dict[str, Any]) -> None:
    """Make the checkpoint exist: check every file is there, write its manifest, then move `latest`."""
    step = manifest["step"]
    present = set(storage.list(step_uri(root, step)))
    missing = [entry["path"] for entry in manifest["files"] if entry["path"] not in present]
    if missing:
        raise CommitAborted(f"{step_name(step)} is missing {missing[:5]} although every rank reported it uploaded")
    write_json(storage, join_uri(step_uri(root, step), MANIFEST), manifest)
    storage.write_bytes(join_uri(root, LATEST), f"{step_name(step)}\n".encode())


def clear_step(storage: Storage, root: str, step: int) -> None:
    """Remove whatever an earlier attempt left under `step-<N>`, so a new attempt starts clean."""
    prefix = step_uri(root, step)
    if not storage.exists(prefix):
        return
    storage.delete(join_uri(prefix, MANIFEST))  # first: from here on, readers see no checkpoint here
    if read_latest(storage, root) == step:
        older = [s for s, _ in committed(storage, root) if s != step]
        if older:
            storage.write_bytes(join_uri(root, LATEST), f"{step_name(older[0])}\n".encode())
        else:
            storage.delete(join_uri(root, LATEST))
    storage.delete_prefix(prefix)
    delete_converted(storage, root, step)


# ---- reader side ---------------------------------------------------------------------------------


def read_latest(storage: Storage, root: str) -> int | None:
    """The step `latest` names, or None when there is none (or it is unreadable)."""
    try:
        return step_of(storage.read_bytes(join_uri(root, LATEST)).decode("utf-8", errors="replace"))
    except ObjectNotFoundError:
        return None


def step_prefixes(storage: Storage, root: str) -> dict[int, set[str]]:
    """Every `step-<N>` under `root` with the keys below it (complete or not)."""
    found: dict[int, set[str]] = {}
    for key in storage.list(root):
        head, _, rest = key.partition("/")
        step = step_of(head)
        if step is not None and rest:
            found.setdefault(step, set()).add(rest)
    return found


def committed(storage: Storage, root: str) -> list[tuple[int, dict[str, Any]]]:
    """(step, manifest) of every checkpoint with a well-formed manifest, newest first; files not checked.

    A storage failure propagates: skipping a manifest that could not be read would let retention
    take a committed checkpoint for a dead attempt.
    """
    found = []
    for step, keys in step_prefixes(storage, root).items():
        if MANIFEST not in keys:
            continue
        try:
            manifest = read_json(storage, join_uri(step_uri(root, step), MANIFEST))
        except ObjectNotFoundError:  # deleted since the listing
            continue
        except StorageError:
            raise
        except CheckpointError as e:  # stored, but not JSON
            log.warning("ignoring %s: %s", step_uri(root, step), e)
            continue
        problem = manifest_problem(manifest, step)
        if problem is None:
            found.append((step, manifest))
        else:
            log.warning("ignoring %s: %s", step_uri(root, step), problem)
    return sorted(found, key=lambda item: item[0], reverse=True)


def manifest_problem(manifest: Any, step: int) -> str | None:
    """Why a manifest cannot describe checkpoint `step`, or None if its shape is right."""
    if not isinstance(manifest, dict) or manifest.get("step") != step or not isinstance(manifest.get("files"), list):
        return f"its manifest does not describe {step_name(step)}"
    for entry in manifest["files"]:
        path = PurePosixPath(str(entry.get("path", "")))
        if path.is_absolute() or ".." in path.parts or not path.parts:
            return f"its manifest lists an unsafe path {entry.get('path')!r}"
    return None


def verify_dir(directory: Path, manifest: dict[str, Any]) -> str | None:
    """None if every file the manifest lists is in `directory` with its size and sha256, else the first problem."""
    for entry in manifest["files"]:
        problem = file_problem(directory / entry["path"], entry)
        if problem:
            return problem
    return None


def file_problem(path: Path, entry: dict[str, Any]) -> str | None:
    """Why a local file is not the one a manifest entry describes, or None if it is."""
    try:
        size, digest = hash_file(path)
    except FileNotFoundError:
        return f"{entry['path']} is missing"
    except OSError as e:
        return f"{entry['path']} cannot be read: {e}"
    if size != entry["size"]:
        return f"{entry['path']} has {size} bytes, its manifest says {entry['size']}"
    if digest != entry["sha256"]:
        return (f"{entry['path']} does not match its manifest "
                f"(sha256 {digest[:16]}..., expected {entry['sha256'][:16]}...)")
    return None


def fetch_verified(storage: Storage, root: str, step: int, manifest: dict[str, Any], target: Path) -> str | None:
    """Download a checkpoint's files into `target`, reusing verified copies; None if all match the manifest."""
    for entry in manifest["files"]:
        local = target / entry["path"]
        if local.is_file() and file_problem(local, entry) is None:
            continue
        try:
            storage.download_file(join_uri(step_uri(root, step), entry["path"]), local)
        except ObjectNotFoundError:
            return f"{entry['path']} is missing"
        problem = file_problem(local, entry)
        if problem:
            local.unlink(missing_ok=True)
            return problem
    return None


# ---- retention ---------------------------------------------------------------------------------


def apply_retention(storage: Storage, root: str, just_committed: int, keep_last: int, keep_best: bool,
                    best_mode: str = "min") -> list[int]:
    """Delete checkpoints beyond the newest `keep_last` (and the best by `metric`), and dead attempts.

    Runs only right after a commit, so nothing is deleted before a newer checkpoint exists.
    Unfinished step prefixes older than `just_committed` belong to attempts that died.
    """
    checkpoints = committed(storage, root)
    keep = {step for step, _ in checkpoints[:keep_last]} | {just_committed}
    scored = [(step, m["metric"]) for step, m in checkpoints if isinstance(m.get("metric"), (int, float))]
    if keep_best and scored:
        pick = min if best_mode == "min" else max
        keep.add(pick(scored, key=lambda item: item[1])[0])
    deleted = []
    for step, _ in checkpoints:
        if step not in keep:
            delete_checkpoint(storage, root, step)
            deleted.append(step)
    for step, step_keys in step_prefixes(storage, root).items():
        if step < just_committed and MANIFEST not in step_keys:
            storage.delete_prefix(step_uri(root, step))
    return deleted


def delete_checkpoint(storage: Storage, root: str, step: int) -> None:
    """Delete the manifest first (the checkpoint stops existing at once), then its files."""
    storage.delete(join_uri(step_uri(root, step), MANIFEST))
    storage.delete_prefix(step_uri(root, step))
    delete_converted(storage, root, step)


def delete_converted(storage: Storage, root: str, step: int) -> None:
    """Delete the universal copy made from `step` (it goes with its original): manifest, then files."""
    prefix = join_uri(root, f"{step_name(step)}{UNIVERSAL_SUFFIX}")
    storage.delete(join_uri(prefix, MANIFEST))
    storage.delete_prefix(prefix)

