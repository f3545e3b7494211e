"""The Ray Train backend: a TorchTrainer whose workers run the shared training loop.

Each Ray worker runs exactly what a torchrun worker runs (`training.run.train`): the same
task, model, DeepSpeed engine (or DDP for ZeRO stage 0), loop and checkpoint manager. Ray
supplies the process group, restarts the worker group on failure (`FailureConfig`), and is
told about every committed checkpoint through `ray.train.report`, with a small pointer
directory (`dlaunch_checkpoint.json`: URI and step) rather than a second copy of the shards.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from training.config import ResolvedJob

POINTER_FILE = "dlaunch_checkpoint.json"


def report_checkpoint(step: int, extra: dict[str, Any]) -> None:
    """Register a committed dlaunch checkpoint with Ray (every rank must call this)."""
    import ray.train

    metrics = {"step": step, **{k: v for k, v in extra.items() if isinstance(v, (int, float)) and v is not None}}
    with tempfile.TemporaryDirectory() as pointer_dir:
        if ray.train.get_context().get_world_rank() == 0:
            Path(pointer_dir, POINTER_FILE).write_text(json.dumps({"step": step, "path": extra.get("path")}))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(pointer_dir))
        else:
            ray.train.report(metrics)


def ray_restored_step() -> int | None:
    """The step of the checkpoint Ray restored this worker group from, if any."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        pointer = Path(directory, POINTER_FILE)
        return json.loads(pointer.read_text())["step"] if pointer.is_file() else None


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """What every Ray worker runs: the shared loop, started from the newest committed checkpoint."""
    from training.run import train

    import ray.train

    os.environ.update(config["env"])
    job = ResolvedJob.model_validate(config["job"])
    if os.environ.get("DLAUNCH_LOG_DIR"):
        from training.run import redirect_output_to_log

        redirect_output_to_log(os.environ["DLAUNCH_LOG_DIR"], str(ray.train.get_context().get_world_rank()))
    restored = ray_restored_step()
    if restored is not None:
        print(f"[dlaunch] Ray restored the worker group; its last registered checkpoint is step {restored}",
              flush=True)
    from training.data.sources import DataError

    try:
        code = train(job, on_checkpoint=report_checkpoint)
    except (DataError, ValueError) as exc:
        raise RuntimeError(f"configuration error: {exc}") from exc
    if code not in (0, None):
        raise RuntimeError(f"training exited with code {code}")


def build_trainer(job: ResolvedJob, storage_path: str) -> Any:
    """A TorchTrainer with one worker per (node x process) slot of the spec; Ray restarts the
    worker group up to `max_restarts` times."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
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
                             failure_config=FailureConfig(max_failures=job.max_restarts),
                             checkpoint_config=CheckpointConfig(num_to_keep=job.training.checkpoint.keep_last)),
    )
