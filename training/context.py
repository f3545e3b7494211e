"""What a worker sets up before training: the process group and the components built from their
config slices (checkpoint manager, tracker), handed to the loop or to a user's entrypoint."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from training.config import ResolvedJob
from training.paths import JobPaths

if TYPE_CHECKING:
    from training.checkpoint.manager import CheckpointManager
    from training.distributed import WorkerInfo
    from training.tasks import Task
    from training.tracking import Tracker


@dataclass
class TrainContext:
    """What a user's `training.entrypoint` function receives: dlaunch's whole set-up, ready to use."""

    job: ResolvedJob
    worker: "WorkerInfo"
    paths: JobPaths
    checkpoints: "CheckpointManager"
    tracker: "Tracker"

    @property
    def job_root(self) -> str:
        """`<checkpoint uri>/<job name>`: checkpoints, tokenizer and model.json live under it."""
        return self.paths.root

    @property
    def deepspeed_config(self) -> dict[str, Any]:
        from training.engine.deepspeed import deepspeed_config

        return deepspeed_config(self.job.training, self.job.layout)

    def make_task(self) -> "Task":
        from training.tasks import make_task

        return make_task(self.job, self.worker, self.job_root)

    def initialize(self, model: Any) -> Any:
        """An engine around `model` with the spec's optimizer, schedule and ZeRO layout: DeepSpeed,
        or plain DDP on the Ray backend with `zero.stage: 0`."""
        if not uses_deepspeed(self.job):
            from training.engine.ddp import DDPEngine

            return DDPEngine(model, self.job.training, self.job.layout, self.worker.device)
        from training.engine.deepspeed import initialize

        return initialize(model, self.job.training, self.job.layout)[0]


def uses_deepspeed(job: ResolvedJob) -> bool:
    """Every job trains in a DeepSpeed engine but the Ray backend's at ZeRO stage 0 (plain DDP)."""
    return not (job.backend == "ray" and job.layout.zero_stage == 0)


def make_context(job: ResolvedJob) -> TrainContext:
    """Join the process group and build the checkpoint manager and tracker from their slices."""
    from training.checkpoint.manager import CheckpointManager
    from training.distributed import init_distributed
    from training.hostmem import steady_allocation
    from training.tracking import Tracker

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from local or s3:// paths, never a hub
    steady_allocation()  # each step's buffers are reused from the heap instead of faulted in afresh
    worker = init_distributed()
    if uses_deepspeed(job):  # before a ZeRO-3 model is built in DeepSpeed's partitioning context
        from training.engine.shm_allreduce import connect

        connect(worker.device)
    paths = JobPaths.for_job(job)
    stopping = job.training.eval.early_stopping
    manager = CheckpointManager.build(job.training.checkpoint, root=paths.checkpoints, rank=worker.rank,
                                      world=worker.world, best_mode=stopping.mode if stopping else "min",
                                      staging_dir=paths.staging)
    tracker = Tracker(paths.run_dir, enabled=worker.is_main, config=job.training.tracking)
    return TrainContext(job, worker, paths, manager, tracker)


def start_tracking(ctx: TrainContext) -> str | None:
    """Start W&B on rank 0, continuing the run recorded in the newest checkpoint."""
    if not ctx.worker.is_main:
        return None
    latest = ctx.checkpoints.latest()
    run_id = latest.manifest.get("wandb_run_id") if latest else None
    return ctx.tracker.start(ctx.job.name, run_id, ctx.job.model_dump(mode="json", by_alias=True))
