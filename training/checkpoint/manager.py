"""Checkpoints with a commit protocol: a checkpoint exists only once its manifest verifies.

Layout: `<root>/step-<N>/` holds every rank's files; rank 0 writes `manifest.json` last
(files, sizes, sha256, step, metric, tracking run id, spec hash) and only then moves
`<root>/latest`. Readers skip step directories whose manifest is missing or does not verify.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LATEST = "latest"
STEP_PREFIX = "step-"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class CommittedCheckpoint:
    step: int
    path: Path
    manifest: dict[str, Any]


def step_of(name: str) -> int | None:
    if not name.startswith(STEP_PREFIX):
        return None
    suffix = name[len(STEP_PREFIX):]
    return int(suffix) if suffix.isdigit() else None


def verify(step_dir: Path) -> dict[str, Any] | None:
    """The manifest of `step_dir` if every listed file exists with its size and sha256, else None."""
    try:
        manifest = json.loads((step_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    for entry in manifest.get("files", []):
        file = step_dir / entry["path"]
        try:
            if file.stat().st_size != entry["size"] or _sha256(file) != entry["sha256"]:
                log.warning("checkpoint %s: %s does not match its manifest; skipping it", step_dir, entry["path"])
                return None
        except OSError:
            log.warning("checkpoint %s: %s is missing; skipping it", step_dir, entry["path"])
            return None
    return manifest


def committed(root: Path, verify_files: bool = True) -> list[CommittedCheckpoint]:
    """Committed checkpoints under `root`, newest first."""
    found = []
    if not root.is_dir():
        return found
    for child in root.iterdir():
        step = step_of(child.name)
        if step is None or not child.is_dir():
            continue
        if verify_files:
            manifest = verify(child)
        else:
            try:
                manifest = json.loads((child / MANIFEST).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                manifest = None
        if manifest is not None:
            found.append(CommittedCheckpoint(step=step, path=child, manifest=manifest))
    return sorted(found, key=lambda c: c.step, reverse=True)


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


class CheckpointManager:
    """Save and restore DeepSpeed engines under `root` with the manifest commit protocol."""

    def __init__(self, root: str, rank: int, world: int, keep_last: int, keep_best: bool,
                 best_mode: str = "min") -> None:
        self.root = Path(root.removeprefix("file://"))
        self.rank, self.world = rank, world
        self.keep_last, self.keep_best, self.best_mode = keep_last, keep_best, best_mode

    def _barrier(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()

    def save(self, engine: Any, step: int, sampler_state: dict[str, int], extra: dict[str, Any]) -> Path:
        """Write every rank's state for `step`, then commit it (rank 0 writes the manifest last)."""
        import torch

        tag = f"{STEP_PREFIX}{step}"
        step_dir = self.root / tag
        if self.rank == 0:
            self.root.mkdir(parents=True, exist_ok=True)
            if step_dir.exists():  # left by an attempt that died before committing
                shutil.rmtree(step_dir)
        self._barrier()
        engine.save_checkpoint(str(self.root), tag=tag, client_state={"step": step}, save_latest=False)
        torch.save({"rng": rng_state(), "sampler": sampler_state}, step_dir / f"rank-{self.rank}.pt")
        self._barrier()
        if self.rank == 0:
            self._commit(step_dir, step, sampler_state, extra)
        self._barrier()
        return step_dir

    def _commit(self, step_dir: Path, step: int, sampler_state: dict[str, int], extra: dict[str, Any]) -> None:
        files = sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST)
        manifest = {
            "step": step,
            "world_size": self.world,
            "sampler": sampler_state,
            "files": [{"path": str(p.relative_to(step_dir)), "size": p.stat().st_size, "sha256": _sha256(p)}
                      for p in files],
            **extra,
        }
        _write_atomic(step_dir / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
        _write_atomic(self.root / LATEST, step_dir.name + "\n")
        self._apply_retention()

    def _apply_retention(self) -> None:
        checkpoints = committed(self.root, verify_files=False)
        keep = {c.step for c in checkpoints[: self.keep_last]}
        scored = [c for c in checkpoints if isinstance(c.manifest.get("metric"), (int, float))]
        if self.keep_best and scored:
            pick = min if self.best_mode == "min" else max
            keep.add(pick(scored, key=lambda c: c.manifest["metric"]).step)
        for checkpoint in checkpoints:
            if checkpoint.step not in keep:
                shutil.rmtree(checkpoint.path, ignore_errors=True)

    def latest(self) -> CommittedCheckpoint | None:
        """The newest checkpoint whose manifest verifies (damaged ones are skipped with a warning)."""
        found = committed(self.root)
        return found[0] if found else None

    def load(self, engine: Any, checkpoint: CommittedCheckpoint) -> dict[str, Any]:
        """Restore engine, optimizer, scheduler and this rank's RNG; returns the sampler state."""
        import torch

        engine.load_checkpoint(str(self.root), tag=checkpoint.path.name)
        rank_state = torch.load(checkpoint.path / f"rank-{self.rank}.pt", weights_only=False)
        set_rng_state(rank_state["rng"])
        return rank_state["sampler"]
