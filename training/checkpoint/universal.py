"""Resume on a different number of data-parallel ranks: DeepSpeed universal checkpoints.

A ZeRO checkpoint (and a bf16 one at stage 0) splits optimizer state into one
`*_optim_states.pt` file per data-parallel rank, and `DeepSpeedEngine._load_zero_checkpoint`
(deepspeed/runtime/engine.py) refuses a different DP world size. DeepSpeed's answer is the
universal checkpoint: `deepspeed/checkpoint/ds_to_universal.py` `main(args)` merges every rank's
fragments into one folder per parameter (`zero/<name>/fp32.pt`, `exp_avg.pt`, ...), and an engine
whose config has `checkpoint.load_universal` loads that folder on any world size
(`DeepSpeedEngine.load_checkpoint` -> `_load_zero_checkpoint` passes `checkpoint_folder` to the
optimizer's `load_state_dict`, which calls `_load_universal_checkpoint` in
runtime/zero/stage_1_and_2.py, runtime/zero/stage3.py and runtime/bf16_optimizer.py).

dlaunch converts once, keeps the copy next to the original as `step-<N>.universal/` and commits it
like any checkpoint: files first, then `manifest.json` with each file's size and sha256 and the
token of the checkpoint it came from. The original is never touched. A copy whose manifest names
the original's token and whose files verify is reused; anything else at that prefix is replaced.
Checkpoints without per-rank optimizer files (fp32 at ZeRO stage 0, the DDP engine's full state
dict) need no conversion: every rank loads the same files.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from training.checkpoint import commit as protocol
from training.checkpoint.commit import UNIVERSAL_SUFFIX
from training.checkpoint.errors import CheckpointError, ObjectNotFoundError
from training.checkpoint.storage import Storage, join_uri

log = logging.getLogger(__name__)

OPTIM_FILES = "_optim_states.pt"
# DeepSpeed's converter also writes `latest_universal` beside its output folder; it is not ours to keep.
CONVERTER_LATEST = "latest_universal"


def universal_name(step: int) -> str:
    """`step-<N>.universal`: not a `step-<N>` name, so listings and retention of checkpoints skip it."""
    return f"{protocol.step_name(step)}{UNIVERSAL_SUFFIX}"


def universal_uri(root: str, step: int) -> str:
    return join_uri(root, universal_name(step))


def needs_conversion(manifest: dict[str, Any]) -> bool:
    """True when the checkpoint keeps optimizer state in per-rank files (ZeRO 1-3, or bf16 at stage 0)."""
    return any(entry["path"].endswith(OPTIM_FILES) for entry in manifest["files"])


def convert(source: Path, target: Path) -> None:
    """Run DeepSpeed's converter from the checkpoint folder `source` into a fresh `target` folder.

    dlaunch's models carry no Megatron `universal_checkpoint_info`, so the converter is told to
    inject the default (its `--inject_missing_state`); one worker, since the trainer's own process
    already holds the cores. The converter's progress output goes to the log at debug level."""
    from deepspeed.checkpoint import ds_to_universal

    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    args = argparse.Namespace(input_folder=str(source), output_folder=str(target), num_extract_workers=1,
                              num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=True)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        ds_to_universal.main(args)
    log.debug("ds_to_universal: %s", output.getvalue())
    (target.parent / CONVERTER_LATEST).unlink(missing_ok=True)


def build_manifest(local: Path, source: dict[str, Any]) -> dict[str, Any]:
    """The copy's manifest: every file with size and sha256, and which checkpoint it was made from."""
    files = []
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        size, digest = protocol.hash_file(path)
        files.append({"path": path.relative_to(local).as_posix(), "size": size, "sha256": digest})
    return {"format": protocol.FORMAT_VERSION, "step": source["step"], "source_token": source.get("token"),
            "source_world_size": source.get("world_size"), "created_at": time.time(), "files": files}


def commit_copy(storage: Storage, root: str, local: Path, manifest: dict[str, Any]) -> None:
    """Upload the converted files under `step-<N>.universal/`, then its manifest, last."""
    prefix = universal_uri(root, manifest["step"])
    storage.delete_prefix(prefix)
    for entry in manifest["files"]:
        storage.upload_file(local / entry["path"], join_uri(prefix, entry["path"]))
    protocol.write_json(storage, join_uri(prefix, protocol.MANIFEST), manifest)


def read_manifest(storage: Storage, root: str, source: dict[str, Any]) -> dict[str, Any] | None:
    """The committed copy's manifest when it was made from the checkpoint `source` describes, else None."""
    uri = join_uri(universal_uri(root, source["step"]), protocol.MANIFEST)
    try:
        manifest = protocol.read_json(storage, uri)
    except (ObjectNotFoundError, CheckpointError):
        return None
    if protocol.manifest_problem(manifest, source["step"]) or manifest.get("source_token") != source.get("token"):
        return None
    return manifest


def fetch_copy(storage: Storage, root: str, manifest: dict[str, Any], target: Path) -> str | None:
    """Make `target` hold the copy's files (reusing verified ones); None when all match the manifest."""
    prefix = universal_uri(root, manifest["step"])
    for entry in manifest["files"]:
        local = target / entry["path"]
        if local.is_file() and protocol.file_problem(local, entry) is None:
            continue
        try:
            storage.download_file(join_uri(prefix, entry["path"]), local)
        except ObjectNotFoundError:
            return f"{entry['path']} is missing"
        problem = protocol.file_problem(local, entry)
        if problem:
            return problem
    return None


@contextlib.contextmanager
def loading_universal(engine: Any) -> Any:
    """Within the block, `engine.load_checkpoint` reads a universal checkpoint folder.

    The choice has to be made after the engine exists (the checkpoint is found after it is built),
    so this sets what `checkpoint: {load_universal: true}` in the DeepSpeed config would have set:
    `DeepSpeedConfig.load_universal_checkpoint`, read only by `DeepSpeedEngine.load_universal_checkpoint()`
    during `load_checkpoint` (deepspeed/runtime/engine.py: `_get_all_ckpt_names`, `_load_checkpoint`,
    `_load_zero_checkpoint`, which hands the folder to the optimizer's `_load_universal_checkpoint`)."""
    config = getattr(engine, "_config", None)
    if config is None or not hasattr(config, "load_universal_checkpoint"):
        raise CheckpointError(f"{type(engine).__name__} cannot load a universal checkpoint; "
                              "resume this checkpoint with the world size it was written with")
    previous, config.load_universal_checkpoint = config.load_universal_checkpoint, True
    try:
        yield engine
    finally:
        config.load_universal_checkpoint = previous
