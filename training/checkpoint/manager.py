"""Checkpoints that never corrupt, resume exactly and survive preemption.

`CheckpointManager` saves DeepSpeed engines under a root URI (a local path, file:// or s3://)
with the commit protocol of `training.checkpoint.commit`:

- `save()` blocks only while this rank's state is staged on local disk. The rank's upload
  process (see `uploader`) then hashes and uploads it; rank 0's commits once every rank's upload
  is in: manifest, then `latest`, then retention. At most one save is in flight: the next
  `save()` first waits for the previous one.
- `latest()` is the newest checkpoint whose files all match its manifest; a damaged one is
  skipped with a warning. `load()` restores engine, optimizer, scheduler, RNG and the named
  component states; from S3 it loads a verified copy in a node-local cache.

The manager knows nothing about samplers or early stopping: `save()` and `load()` take
`states={name: component}` of objects with `state_dict()` / `load_state_dict()` (torchtitan's
`CheckpointManager(states=...)` habit). Each state is kept in every rank's file and, under its
name, in the manifest, where `dlaunch` and people can read it.
- `wait()` and `close()` block until the last save has committed. An exit without `close()`
  still waits for this rank's last upload (and, on rank 0, for its commit).

`save`, `wait`, `close` and `load` are collective: every rank calls them, in the same order.
`list_committed()` and `latest_step()` read a root without a manager, for `dlaunch` commands.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Union

from training.checkpoint import commit as protocol
from training.checkpoint import universal
from training.checkpoint.commit import step_name, step_uri
from training.checkpoint.errors import CheckpointError, IncompatibleCheckpointError
from training.checkpoint.rng import capture_rng, restore_rng
from training.checkpoint.storage import LocalStorage, S3Options, join_uri, local_path, storage_for
from training.checkpoint.uploader import UploadProcess

if TYPE_CHECKING:
    from training.config import CheckpointConfig

log = logging.getLogger(__name__)

DEFAULT_COMMIT_TIMEOUT_S = 300.0
UPLOAD_NICENESS = 10


class Stateful(Protocol):
    """A component that saves its own state: JSON-compatible data, the same on every call."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


# A component, or a state dict that is already plain data (what a reader of a checkpoint gets back).
StateSource = Union[Stateful, Mapping[str, Any]]
RANK_RNG_KEY = "rng"  # the rank file's own entry; no component may take that name


@dataclass(frozen=True)
class CommittedCheckpoint:
    """A checkpoint whose manifest exists; from `latest()`, one whose files also verified."""

    step: int
    uri: str
    manifest: dict[str, Any]

    @property
    def path(self) -> str:
        """The checkpoint's URI, for messages and the metrics log."""
        return self.uri


@dataclass(frozen=True)
class SaveOutcome:
    """How one save ended: committed, or the reason it was not."""

    step: int
    committed: bool
    error: str | None = None


@dataclass(frozen=True)
class CheckpointInfo:
    """One committed checkpoint, as `dlaunch checkpoints` and `dlaunch status` show it."""

    step: int
    uri: str
    size_bytes: int
    created_at: float | None
    metric: float | None
    latest: bool


@dataclass(frozen=True)
class _InFlight:
    step: int
    token: str


def checkpoints_uri(base_uri: str, job_name: str) -> str:
    """Where a job's checkpoints live: `<training.checkpoint.uri>/<job name>/checkpoints`."""
    return join_uri(base_uri, job_name, "checkpoints")


def default_staging_dir(root: str) -> Path:
    """Node-local staging and cache space for `root`: `$DLAUNCH_STAGING_DIR` or the temp dir."""
    base = Path(os.environ.get("DLAUNCH_STAGING_DIR") or tempfile.gettempdir())
    return base / f"dlaunch-staging-{os.getuid()}" / hashlib.sha1(root.encode()).hexdigest()[:12]


class CheckpointManager:
    """Save and restore DeepSpeed engines under `root` with staged, background, committed uploads."""

    def __init__(self, root: str, rank: int, world: int, keep_last: int, keep_best: bool,
                 best_mode: str = "min", *, async_save: bool = True, endpoint_url: str | None = None,
                 staging_dir: str | os.PathLike[str] | None = None,
                 commit_timeout_s: float = DEFAULT_COMMIT_TIMEOUT_S, s3_options: S3Options | None = None,
                 upload_niceness: int = UPLOAD_NICENESS) -> None:
        self.root = root
        self.rank, self.world = rank, world
        self.keep_last, self.keep_best, self.best_mode = keep_last, keep_best, best_mode
        self.async_save, self.commit_timeout_s = async_save, commit_timeout_s
        self.storage = storage_for(root, endpoint_url=endpoint_url, s3_options=s3_options)
        self.staging = Path(staging_dir) if staging_dir else default_staging_dir(root)
        self.last_outcome: SaveOutcome | None = None
        self._uploads = UploadProcess({"endpoint_url": endpoint_url, "rank": rank, "niceness": upload_niceness,
                                       "s3_options": asdict(s3_options) if s3_options else None})
        self._inflight: _InFlight | None = None
        self._staging_cleared = False
        self._seen_steps: set[int] | None = None  # step prefixes under root (rank 0, from the first save on)
        self._trusted: dict[int, str] = {}  # step -> token of checkpoints this process committed or verified
        self._fetched: dict[int, Path] = {}  # step -> verified local copy of an S3 checkpoint
        self._pid = os.getpid()
        atexit.register(self._finish_at_exit)
        _watch_for_unhandled_errors()

    @classmethod
    def build(cls, config: "CheckpointConfig", *, root: str, rank: int, world: int, best_mode: str = "min",
              staging_dir: str | os.PathLike[str] | None = None) -> "CheckpointManager":
        """A manager from the spec's `training.checkpoint` slice plus the runtime facts: where the
        job's checkpoints live, this rank, and which way `keep_best` ranks the metric."""
        return cls(root, rank, world, config.keep_last, config.keep_best, best_mode, async_save=config.async_,
                   endpoint_url=config.endpoint_url, staging_dir=staging_dir)

    @property
    def upload_pid(self) -> int | None:
        """The pid of this rank's upload process, while it runs."""
        return self._uploads.pid

    # ---- saving ------------------------------------------------------------------------------

    def save(self, engine: Any, step: int, states: Mapping[str, StateSource],
             extra: dict[str, Any] | None = None) -> str:
        """Checkpoint `step`: stage this rank's state locally, then upload and commit it in the background.

        `states` names the components that save their own state (the sampler, early stopping);
        `extra` is free-form data for the manifest only (spec hash, metric, W&B run id). Blocks
        while the previous save finishes and while the state is staged; with `async_save=False`
        also until the commit. Returns the URI the checkpoint will have.
        """
        self.wait()
        started = time.perf_counter()
        extra = extra or {}
        state_dicts = _state_dicts(step, states, extra)
        token = self._agree(uuid.uuid4().hex if self.rank == 0 else None)
        if self.rank == 0:
            self._clear_step(step)
        self._barrier()
        staged, rng = self._stage(engine, step, state_dicts)
        job = {"root": self.root, "step": step, "rank": self.rank, "world": self.world, "token": token,
               "staged_dir": os.fspath(staged), "rng": rng}
        if self.rank == 0:
            job["commit"] = {"states": state_dicts, "extra": extra, "keep_last": self.keep_last,
                             "keep_best": self.keep_best, "best_mode": self.best_mode,
                             "timeout_s": self.commit_timeout_s, "stage_s": time.perf_counter() - started}
        self._uploads.submit(job)
        self._inflight = _InFlight(step, token)
        if not self.async_save:
            self.wait()
        return step_uri(self.root, step)

    def _clear_step(self, step: int) -> None:
        """Remove what an earlier attempt left at this step; an unreachable store only warns.

        The root is listed once, at the first save; after that only this job writes step prefixes,
        so a step it has not seen needs no storage call on the training step's critical path.
        """
        try:
            if self._seen_steps is None:
                self._seen_steps = set(protocol.step_prefixes(self.storage, self.root))
            if step in self._seen_steps:
                protocol.clear_step(self.storage, self.root, step)
            self._seen_steps.add(step)
        except CheckpointError as e:
            log.warning("could not clear %s before saving it (the save will most likely fail): %s",
                        step_uri(self.root, step), e)

    def _stage(self, engine: Any, step: int, states: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
        """Write this rank's DeepSpeed state, RNG and component states under `staging/rank-<r>/step-<N>/`."""
        import torch

        rank_dir = self.staging / f"rank-{self.rank}"
        if not self._staging_cleared:  # whatever a killed attempt left behind
            shutil.rmtree(rank_dir, ignore_errors=True)
            self._staging_cleared = True
        staged = rank_dir / step_name(step)
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        rng = capture_rng()
        engine.save_checkpoint(os.fspath(rank_dir), tag=step_name(step), client_state={"step": step},
                               save_latest=False)
        torch.save({RANK_RNG_KEY: rng, **states}, staged / f"rank-{self.rank}.pt")
        return staged, rng

    def wait(self) -> SaveOutcome | None:
        """Block until the save in flight has committed or failed, and return how it ended."""
        if self._inflight is None:
            return self.last_outcome
        inflight, self._inflight = self._inflight, None
        uploaded = self._uploads.reply("uploaded")
        everyone_uploaded = self._all(uploaded["ok"])
        outcome = None
        if self.rank == 0:
            if uploaded["ok"] and not everyone_uploaded:
                self._uploads.abandon(inflight.step, "another rank could not upload its files")
            committed = self._uploads.reply("committed")
            outcome = SaveOutcome(inflight.step, committed["ok"], committed.get("error"))
            if outcome.committed:
                self._trusted[inflight.step] = inflight.token
        self.last_outcome = self._agree(outcome)
        _report(self.last_outcome, self.root)
        return self.last_outcome

    def close(self) -> SaveOutcome | None:
        """Wait for the last save to commit, then stop the upload process. Call before exiting."""
        outcome = self.wait()
        self._uploads.close()
        atexit.unregister(self._finish_at_exit)
        return outcome

    def _finish_at_exit(self) -> None:
        """At exit without `close()`: wait for this rank's last upload and, on rank 0, its commit.

        After an unhandled exception the other ranks are likely gone, so the commit is abandoned
        instead of waited for (it could only time out); this rank's upload still finishes.
        """
        if os.getpid() != self._pid:
            return
        if self._inflight is not None:
            step, self._inflight = self._inflight.step, None
            if _exit_after_error["seen"]:
                self._uploads.abandon(step, "the trainer is exiting after an error")
            reply = self._uploads.reply("uploaded")
            if self.rank == 0 and reply["ok"]:
                reply = self._uploads.reply("committed")
            _report(SaveOutcome(step, reply["ok"], reply.get("error")), self.root)
        self._uploads.close()

    # ---- resuming ----------------------------------------------------------------------------

    def latest(self) -> CommittedCheckpoint | None:
        """The newest checkpoint whose every file matches its manifest; damaged ones are skipped.

        From S3 this downloads the candidate into the node-local cache, which `load()` then uses.
        """
        for step, manifest in protocol.committed(self.storage, self.root):
            checkpoint = CommittedCheckpoint(step, step_uri(self.root, step), manifest)
            problem = self._verify(checkpoint)
            if problem is None:
                return checkpoint
            log.warning("checkpoint %s is damaged: %s. Skipping it; resuming from an older checkpoint",
                        checkpoint.uri, problem)
        return None

    def _verify(self, checkpoint: CommittedCheckpoint) -> str | None:
        if self._trusted.get(checkpoint.step) == checkpoint.manifest.get("token"):
            return None
        if isinstance(self.storage, LocalStorage):
            problem = protocol.verify_dir(local_path(checkpoint.uri), checkpoint.manifest)
        else:
            target = self._cache_dir(checkpoint.step)
            problem = protocol.fetch_verified(self.storage, self.root, checkpoint.step, checkpoint.manifest, target)
            if problem is None:
                self._fetched[checkpoint.step] = target
        if problem is None:
            self._trusted[checkpoint.step] = checkpoint.manifest.get("token", "")
        return problem

    def load(self, engine: Any, checkpoint: CommittedCheckpoint,
             states: Mapping[str, Stateful] | None = None) -> dict[str, Any]:
        """Restore engine, optimizer, scheduler, this rank's RNG and each component in `states`;
        returns every saved state by name.

        On a world size other than the checkpoint's, ZeRO state is loaded from its universal copy
        (`training.checkpoint.universal`), converted on first use; the data position carries over
        because the sampler's state is one global count of consumed samples.

        A component the checkpoint has no state for keeps its fresh state; checkpoints written
        before components saved themselves kept early stopping in the manifest only, so the
        manifest's entry of that name is used when the rank file has none."""
        import torch

        directory = self._local_copy(checkpoint)
        saved_world = int(checkpoint.manifest.get("world_size") or self.world)
        if saved_world != self.world and universal.needs_conversion(checkpoint.manifest):
            converted = self._universal_copy(checkpoint, directory)
            with universal.loading_universal(engine):
                loaded = _load_engine(engine, converted, checkpoint.uri)
        else:
            loaded = _load_engine(engine, directory, checkpoint.uri)
        if loaded is None:
            raise CheckpointError(f"DeepSpeed found no checkpoint in {directory} (copied from {checkpoint.uri})")
        # Component states are the same in every rank's file. A rank the checkpoint had no rank for
        # reads rank 0's and keeps its freshly seeded RNG: no saved stream belongs to it.
        own = self.rank < saved_world
        state = torch.load(directory / f"rank-{self.rank if own else 0}.pt", weights_only=True)
        rng = state.pop(RANK_RNG_KEY)
        if own:
            restore_rng(rng)
        for name, component in (states or {}).items():
            saved = state.get(name, checkpoint.manifest.get(name))
            if saved is not None:
                component.load_state_dict(saved)
                state[name] = saved
        self._barrier()
        if self._fetched.pop(checkpoint.step, None) and int(os.environ.get("LOCAL_RANK", self.rank)) == 0:
            shutil.rmtree(directory, ignore_errors=True)
            shutil.rmtree(self._universal_cache(checkpoint.step), ignore_errors=True)
        return state

    def _universal_copy(self, checkpoint: CommittedCheckpoint, source: Path) -> Path:
        """A local folder holding the universal form of `checkpoint`, converted once (by rank 0, the
        other ranks waiting in the broadcast) or reused when a committed copy of it verifies."""
        reply: dict[str, Any] | None = None
        if self.rank == 0:
            try:
                reply = {"manifest": self._verified_copy(checkpoint) or self._convert(checkpoint, source)}
            except Exception as e:  # every rank must hear of it, or they would wait forever
                reply = {"error": f"{type(e).__name__}: {e}"}
        reply = self._agree(reply)
        if "error" in reply:
            raise CheckpointError(f"converting {checkpoint.uri} (written by {checkpoint.manifest.get('world_size')} "
                                  f"ranks) for {self.world} ranks failed: {reply['error']}")
        return self._fetch_copy(reply["manifest"])

    def _verified_copy(self, checkpoint: CommittedCheckpoint) -> dict[str, Any] | None:
        """The manifest of a committed universal copy of `checkpoint` whose files all verify, else None."""
        manifest = universal.read_manifest(self.storage, self.root, checkpoint.manifest)
        if manifest is None:
            return None
        if isinstance(self.storage, LocalStorage):
            problem = protocol.verify_dir(local_path(universal.universal_uri(self.root, checkpoint.step)), manifest)
        else:
            problem = universal.fetch_copy(self.storage, self.root, manifest, self._universal_cache(checkpoint.step))
        if problem:
            log.warning("the universal copy of %s is damaged (%s); converting again", checkpoint.uri, problem)
            return None
        log.info("reusing the universal copy of %s", checkpoint.uri)
        return manifest

    def _convert(self, checkpoint: CommittedCheckpoint, source: Path) -> dict[str, Any]:
        """Convert `checkpoint` (local folder `source`) and commit the copy beside it; returns its manifest."""
        started = time.perf_counter()
        local_root = isinstance(self.storage, LocalStorage)
        work = self.staging / "universal" / "work" if local_root else self._universal_cache(checkpoint.step)
        universal.convert(source, work)
        manifest = universal.build_manifest(work, checkpoint.manifest)
        universal.commit_copy(self.storage, self.root, work, manifest)
        if local_root:
            shutil.rmtree(work.parent, ignore_errors=True)
        log.info("converted %s from %s ranks to a universal checkpoint in %.1f s: %s", checkpoint.uri,
                 checkpoint.manifest.get("world_size"), time.perf_counter() - started,
                 universal.universal_uri(self.root, checkpoint.step))
        return manifest

    def _fetch_copy(self, manifest: dict[str, Any]) -> Path:
        """The local folder of a committed universal copy: itself, or a verified download of it."""
        if isinstance(self.storage, LocalStorage):
            return local_path(universal.universal_uri(self.root, manifest["step"]))
        target = self._universal_cache(manifest["step"])
        problem = universal.fetch_copy(self.storage, self.root, manifest, target)
        if problem:
            raise CheckpointError(f"{universal.universal_uri(self.root, manifest['step'])} changed after it was "
                                  f"committed: {problem}; restart the job to convert it again")
        return target

    def _universal_cache(self, step: int) -> Path:
        return self.staging / "cache" / universal.universal_name(step)

    def _local_copy(self, checkpoint: CommittedCheckpoint) -> Path:
        """A local directory holding the checkpoint's files: the committed one, or a verified S3 copy."""
        if isinstance(self.storage, LocalStorage):
            return local_path(checkpoint.uri)
        target = self._fetched.get(checkpoint.step) or self._cache_dir(checkpoint.step)
        problem = protocol.fetch_verified(self.storage, self.root, checkpoint.step, checkpoint.manifest, target)
        if problem:
            raise CheckpointError(f"checkpoint {checkpoint.uri} changed after it was chosen: {problem}; "
                                  "restart the job to resume from the newest intact checkpoint")
        self._fetched[checkpoint.step] = target
        return target

    def _cache_dir(self, step: int) -> Path:
        return self.staging / "cache" / step_name(step)

    # ---- the process group -------------------------------------------------------------------

    def _barrier(self) -> None:
        if _distributed():
            import torch.distributed as dist

            dist.barrier()

    def _all(self, flag: bool) -> bool:
        """True when `flag` is true on every rank."""
        if not _distributed():
            return flag
        import torch.distributed as dist

        flags: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(flags, flag)
        return all(flags)

    def _agree(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank."""
        if not _distributed():
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


_exit_after_error = {"seen": False}


def _watch_for_unhandled_errors() -> None:
    """Chain `sys.excepthook` once, so that the exit hook knows the interpreter is dying of an error."""
    previous = sys.excepthook
    if getattr(previous, "_dlaunch_checkpoints", False):
        return

    def hook(*exc_info: Any) -> None:
        _exit_after_error["seen"] = True
        previous(*exc_info)

    hook._dlaunch_checkpoints = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def _distributed() -> bool:
    if "torch" not in sys.modules:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _load_engine(engine: Any, directory: Path, uri: str) -> Any:
    """`engine.load_checkpoint` of `directory`; a model that does not fit the saved tensors is a
    configuration error, not a crash to retry.

    DeepSpeed restores the module with `module.load_state_dict(..., strict=True)`
    (deepspeed/runtime/engine.py, `DeepSpeedEngine.load_module_state_dict`), and torch's
    `Module.load_state_dict` raises RuntimeError("Error(s) in loading state_dict for ...: size
    mismatch for ... / Missing key(s) ...") when the model differs. model.json normally catches a
    changed model before this (`training.models.restore.refuse_incompatible_resume`); this covers
    what it cannot see, such as a user's `model.factory`.
    """
    try:
        loaded, _ = engine.load_checkpoint(os.fspath(directory.parent), tag=directory.name)
    except RuntimeError as exc:
        if "Error(s) in loading state_dict" not in str(exc):
            raise
        from training.models.compat import incompatible_message

        detail = str(exc).split("\n", 2)[1].strip() if "\n" in str(exc) else str(exc)
        raise IncompatibleCheckpointError(incompatible_message(uri.rsplit("/", 1)[0], [detail])) from exc
    return loaded


def _state_dicts(step: int, states: Mapping[str, StateSource], extra: dict[str, Any]) -> dict[str, Any]:
    """Each component's state by name, checked to be JSON data under a name of its own."""
    taken = protocol.MANIFEST_KEYS | {RANK_RNG_KEY} | set(extra)
    clashes = sorted(set(states) & taken)
    if clashes:
        raise CheckpointError(f"saving step {step}: state names {clashes} clash with the manifest's own keys "
                              f"or the extra fields; rename the component")
    dicts = {name: dict(source.state_dict()) if hasattr(source, "state_dict") else dict(source)
             for name, source in states.items()}
    _require_json(step, **{f"states.{name}": value for name, value in dicts.items()}, extra=extra)
    return dicts


def _require_json(step: int, **values: Any) -> None:
    for name, value in values.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"saving step {step}: {name} must be JSON-serializable for the manifest: {e}") from e


def _report(outcome: SaveOutcome, root: str) -> None:
    if outcome.committed:
        log.info("checkpoint %s committed", step_uri(root, outcome.step))
    else:
        log.warning("checkpoint %s was not committed: %s. Training goes on; the next save tries again",
                    step_uri(root, outcome.step), outcome.error)


# ---- reading a root without a manager ------------------------------------------------------------


def list_committed(uri: str, *, endpoint_url: str | None = None) -> list[CheckpointInfo]:
    """Every checkpoint under `uri` with a manifest, newest first (files are not re-hashed)."""
    storage = storage_for(uri, endpoint_url=endpoint_url)
    latest = protocol.read_latest(storage, uri)
    return [
        CheckpointInfo(step=step, uri=step_uri(uri, step), size_bytes=sum(f["size"] for f in manifest["files"]),
                       created_at=manifest.get("created_at"), metric=manifest.get("metric"), latest=step == latest)
        for step, manifest in protocol.committed(storage, uri)
    ]


def latest_step(uri: str, *, endpoint_url: str | None = None) -> int | None:
    """The last committed step under `uri`, or None: reads `latest` and its manifest only."""
    storage = storage_for(uri, endpoint_url=endpoint_url)
    step = protocol.read_latest(storage, uri)
    if step is not None:
        try:
            manifest = protocol.read_json(storage, join_uri(step_uri(uri, step), protocol.MANIFEST))
        except CheckpointError:  # gone or unreadable: fall back to the manifests themselves
            manifest = None
        if protocol.manifest_problem(manifest, step) is None:
            return step
    found = protocol.committed(storage, uri)
    return found[0][0] if found else None
