"""The Ray Train backend: a TorchTrainer whose workers run the shared training loop.

Each Ray worker runs exactly what a torchrun worker runs (`training.run.train`): the same
task, model, DeepSpeed engine (or DDP for ZeRO stage 0), loop and checkpoint manager. Ray
supplies the process group and restarts the worker group on failure (`FailureConfig`); the
restarted workers resume from dlaunch's newest verified checkpoint, as torchrun workers do.

Checkpoints are never registered with Ray: each committed one is reported as metrics only.
Ray Train persists a reported checkpoint under `RunConfig.storage_path` and, before that, checks
for a marker file the driver wrote there (ray/train/v2/_internal/execution/storage.py:
StorageContext.persist_current_checkpoint -> _check_validation_file). On KubeRay the driver runs
on the head pod, so a local storage path exists only there and every report from a worker pod
raises "A local path on the head node is not accessible by worker nodes". dlaunch's own commit
protocol already makes checkpoints durable and resumable, so Ray needs no copy and no pointer.
"""

from __future__ import annotations

import os
from typing import Any

from training.config import ResolvedJob


def checkpoint_metrics(step: int, extra: dict[str, Any]) -> dict[str, Any]:
    """The numbers reported to Ray for a committed checkpoint: its step and numeric extras."""
    numbers = {k: v for k, v in extra.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"step": step, **numbers}


def report_checkpoint(step: int, extra: dict[str, Any]) -> None:
    """Tell Ray a dlaunch checkpoint committed, as metrics without a Ray checkpoint. Every rank
    calls this: in Ray Train v2 `report` is a barrier across the worker group
    (ray/train/v2/_internal/execution/context.py TrainContext.report)."""
    import ray.train

    ray.train.report(checkpoint_metrics(step, extra))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """What every Ray worker runs: the shared loop, started from the newest committed checkpoint.

    A `ConfigError` propagates unchanged: Ray Train keeps the worker's exception object in
    `WorkerGroupError.worker_failures`, and the driver (`training.ray_entry`) decides on its type."""
    from training.heap import defer_collection
    from training.run import train

    import ray.train

    defer_collection()  # train() settles it once the job is built (training.heap)
    os.environ.update(config["env"])
    job = ResolvedJob.model_validate(config["job"])
    if os.environ.get("DLAUNCH_LOG_DIR"):
        from training.run import redirect_output_to_log

        redirect_output_to_log(os.environ["DLAUNCH_LOG_DIR"], str(ray.train.get_context().get_world_rank()))
    code = train(job, on_checkpoint=report_checkpoint)
    if code not in (0, None):
        raise RuntimeError(f"training exited with code {code}")


def build_trainer(job: ResolvedJob, storage_path: str) -> Any:
    """A TorchTrainer with one worker per (node x process) slot of the spec; Ray restarts the
    worker group up to `max_restarts` times. `storage_path` holds only Ray's own run state."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    import ray

    # gpus_per_node is processes per node on a machine without GPUs (the local target on a laptop).
    use_gpu = job.gpus_per_node > 0 and ray.cluster_resources().get("GPU", 0) > 0
    env = {k: v for k, v in os.environ.items() if k.startswith(("DLAUNCH_", "WANDB_", "AWS_", "HF_", "OMP_"))}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": job.model_dump(mode="json", by_alias=True), "env": env},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=job.world_size, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": 1, **({"GPU": 1} if use_gpu else {})}),
        run_config=RunConfig(name=job.name, storage_path=storage_path,
                             failure_config=FailureConfig(max_failures=job.max_restarts)),
    )
