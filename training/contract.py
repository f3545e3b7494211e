"""The contract between the launcher and the workers: exactly what both sides read and write.

The launcher runs where the user types; the `training` package runs inside every worker. At
module level the launcher imports training things only from here (`tests/test_layering.py`
checks it), so this module re-exports the shared definitions from where the worker keeps them
and imports nothing heavy (no torch, transformers, deepspeed or ray): the CLI imports it at
start-up. Anything else from `training` — model builders, export, the storage layer — the
launcher imports inside the function that needs it.

- **Resolved job**: `ResolvedJob`, the JSON every worker reads (`job.json`), with the plan's
  `BatchLayout` and the training part of the spec (`TrainingConfig`, `ModelConfig`), which
  `launcher/spec.py` embeds and checks with `deepspeed_conflicts`.
- **Exit codes**: `CONFIG_ERROR`, `PREEMPTED`, `POST_TRAINING_FAILED` (`training/exitcodes.py`),
  which the pod failure policy and the local target map to outcomes.
- **Job paths**: `JobPaths` (`training/paths.py`) names every URI and directory a job writes:
  the job root `<checkpoint uri>/<job>/`, its `CHECKPOINTS_DIR`, its node-local run directory;
  `checkpoints_uri(<checkpoint uri>, <job>)` and `join_uri` for callers without a resolved job;
  `METRICS_FILE` under the run directory.
- **Metric events**: JSON lines in `<run_dir>/METRICS_FILE`, one object per event with
  `event` (`train`, `eval`, ...), `time` and, for training and evaluation, `step`.
- **Checkpoint reader**: `list_committed` and `latest_step` read only committed (verified)
  checkpoints, as `CheckpointInfo`; failures are `CheckpointError`, a missing object
  `ObjectNotFoundError`.
"""

from __future__ import annotations

from training import __version__
from training.checkpoint.errors import CheckpointError, ObjectNotFoundError
from training.checkpoint.manager import CheckpointInfo, checkpoints_uri, latest_step, list_committed
from training.checkpoint.storage import join_uri
from training.config import BatchLayout, ModelConfig, ResolvedJob, StrictModel, TrainingConfig, deepspeed_conflicts
from training.exitcodes import CONFIG_ERROR, POST_TRAINING_FAILED, PREEMPTED
from training.paths import CHECKPOINTS_DIR, JobPaths
from training.tracking import METRICS_FILE

__all__ = [
    "CHECKPOINTS_DIR",
    "CONFIG_ERROR",
    "METRICS_FILE",
    "POST_TRAINING_FAILED",
    "PREEMPTED",
    "BatchLayout",
    "CheckpointError",
    "CheckpointInfo",
    "JobPaths",
    "ModelConfig",
    "ObjectNotFoundError",
    "ResolvedJob",
    "StrictModel",
    "TrainingConfig",
    "__version__",
    "checkpoints_uri",
    "deepspeed_conflicts",
    "join_uri",
    "latest_step",
    "list_committed",
]
