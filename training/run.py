"""The one worker entrypoint: `python -m training.run job.json`, on a laptop or in a pod.

Exit codes: 0 done, `exitcodes.CONFIG_ERROR` when the job or its data is wrong (restarting
cannot help), `exitcodes.PREEMPTED` after a checkpoint written on SIGTERM (retriable).
Post-training work (quantize, export, upload on rank 0) runs after the final checkpoint is
committed; if it fails, the worker still exits 0, so that torchrun does not restart a gang whose
training is done, and records the failure for the node agent, which exits
`exitcodes.POST_TRAINING_FAILED` (see `training.agent`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from training import exitcodes
from training.config import ResolvedJob
from training.data.sources import DataError

if TYPE_CHECKING:
    from training.checkpoint.manager import CheckpointManager
    from training.distributed import WorkerInfo
    from training.tasks import Task
    from training.tracking import Tracker

log = logging.getLogger("training.run")


def redirect_output_to_log(log_dir: str, rank: str) -> None:
    """Send this process's stdout and stderr (C-level too) to `<log_dir>/rank-<rank>.log`."""
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(log_dir) / f"rank-{rank}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def load_job(path: str) -> ResolvedJob:
    with open(path, encoding="utf-8") as handle:
        return ResolvedJob.model_validate_json(handle.read())


def load_job_or_log(path: str) -> ResolvedJob | None:
    """The job in `path`, or None after logging why it cannot be read (a configuration error)."""
    try:
        return load_job(path)
    except (OSError, ValidationError) as exc:
        log.error("cannot read the job file %s: %s", path, exc)
        return None


def job_root(job: ResolvedJob) -> str:
    """`<checkpoint uri>/<job name>`: where this job's checkpoints, tokenizer and model.json live."""
    from training.checkpoint.storage import join_uri

    return join_uri(job.training.checkpoint.uri, job.name)


@dataclass
class TrainContext:
    """What a user's `training.entrypoint` function receives: dlaunch's whole set-up, ready to use."""

    job: ResolvedJob
    worker: "WorkerInfo"
    job_root: str
    checkpoints: "CheckpointManager"
    tracker: "Tracker"

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
        if self.job.backend == "ray" and self.job.layout.zero_stage == 0:
            from training.engine.ddp import DDPEngine

            return DDPEngine(model, self.job.training, self.job.layout, self.worker.device)
        from training.engine.deepspeed import initialize

        return initialize(model, self.job.training, self.job.layout)[0]


def make_context(job: ResolvedJob) -> TrainContext:
    from training.checkpoint.manager import CheckpointManager
    from training.checkpoint.storage import join_uri
    from training.distributed import init_distributed
    from training.tracking import Tracker

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from local or s3:// paths, never a hub
    worker = init_distributed()
    root = job_root(job)
    stopping = job.training.eval.early_stopping
    ckpt = job.training.checkpoint
    manager = CheckpointManager(join_uri(root, "checkpoints"), worker.rank, worker.world,
                                ckpt.keep_last, ckpt.keep_best, stopping.mode if stopping else "min",
                                async_save=ckpt.async_, endpoint_url=ckpt.endpoint_url,
                                staging_dir=Path(job.run_dir) / "checkpoint-staging")
    return TrainContext(job, worker, root, manager, Tracker(job.run_dir, enabled=worker.is_main))


def start_tracking(ctx: TrainContext) -> str | None:
    """Start W&B on rank 0, continuing the run recorded in the newest checkpoint."""
    if not ctx.worker.is_main:
        return None
    latest = ctx.checkpoints.latest()
    tracking = ctx.job.training.tracking
    return ctx.tracker.start_wandb(tracking.wandb, ctx.job.name, latest.manifest.get("wandb_run_id") if latest else None,
                                   ctx.job.model_dump(mode="json", by_alias=True), ctx.job.run_dir,
                                   tensorboard=tracking.tensorboard)


def compress_after_training(ctx: TrainContext) -> None:
    """Rank 0: quantize / export the final checkpoint as the spec's `compression:` asks, upload the
    artifacts to `<job root>/artifacts/` and log them (W&B artifacts too)."""
    import tempfile

    from training.checkpoint.storage import join_uri, storage_for
    from training.compress.pipeline import example_inputs, export_model, float_layers_to_keep
    from training.models.restore import load_trained_model
    from training.tasks import read_splits

    compression = ctx.job.training.compression
    if compression is None or not (compression.quantize or compression.export):
        return
    endpoint = ctx.job.training.checkpoint.endpoint_url
    variants = [True] if compression.quantize else [False]
    if compression.quantize and compression.export:
        variants = [False, True]
    with tempfile.TemporaryDirectory() as tmp:
        trained = load_trained_model(join_uri(ctx.job_root, "checkpoints"), Path(tmp), endpoint)
        inputs = example_inputs(trained.tokenizer, trained.info)
        storage = storage_for(ctx.job_root, endpoint_url=endpoint)
        keep_float: list[str] = []
        if compression.quantize and compression.quantize.keep_float_layers:
            _, validation = read_splits(ctx.job, with_labels=False)
            texts = [doc.text for doc in validation[:compression.quantize.calibration_samples]]
            keep_float = float_layers_to_keep(trained, texts, compression.quantize.keep_float_layers)
            ctx.tracker.log("quantize", step=trained.step, keep_float=keep_float, calibration_samples=len(texts))
        for fmt in compression.export or ["torchscript"]:
            for quantized in variants:
                result = export_model(trained.model, inputs, fmt, Path(tmp) / "out", quantized, keep_float)
                uri = join_uri(ctx.job_root, "artifacts", f"step-{trained.step}", result.path.name)
                storage.upload_file(result.path, uri)
                ctx.tracker.log("artifact", step=trained.step, uri=uri, format=fmt, quantized=quantized,
                                max_abs_diff=result.max_abs_diff, agreement=result.agreement)
                ctx.tracker.log_artifact(result.path, f"{ctx.job.name}-{fmt}{'-int8' if quantized else ''}")


def record_post_training_failure(message: str) -> None:
    """Tell the node agent (`training.agent`) that post-training work failed, when one runs us."""
    from training.agent import POST_TRAINING_MARKER, STATUS_DIR_ENV

    status_dir = os.environ.get(STATUS_DIR_ENV)
    if status_dir and Path(status_dir).is_dir():
        (Path(status_dir) / POST_TRAINING_MARKER).write_text(message + "\n", encoding="utf-8")


def post_training(ctx: TrainContext, step: int) -> None:
    """Rank 0's work after the final checkpoint committed. A failure here is logged, recorded as a
    `post_training_failed` event and reported to the agent, never raised: the trained model is
    safe, and a raised error would make torchrun (or Ray) restart a gang that has finished."""
    try:
        compress_after_training(ctx)
    except Exception as exc:  # noqa: BLE001 - any failure of this step is reported the same way
        message = f"{type(exc).__name__}: {exc}"
        log.exception("post-training work failed after the final checkpoint (step %d) committed", step)
        ctx.tracker.log("post_training_failed", step=step, error=message)
        record_post_training_failure(f"step {step}: {message}")


def train(job: ResolvedJob, on_checkpoint: "Callable[[int, dict[str, Any]], None] | None" = None) -> int:
    """Build task, model and engine, run the loop, and return the process exit code.
    `on_checkpoint(step, manifest_extra)` runs on every rank after each committed save (Ray uses it)."""
    from training.imports import load_object
    from training.loop import Trainer

    ctx = make_context(job)
    if job.training.entrypoint:
        user_main = load_object(job.training.entrypoint, "training.entrypoint")
        code = int(user_main(ctx) or 0)
        ctx.checkpoints.close()
        return code
    task = ctx.make_task()
    model = task.prepare_model()
    if ctx.worker.is_main and not job.training.model.factory:
        from training.models.restore import save_model_info

        save_model_info(ctx.job_root, model, task, job.training.checkpoint.endpoint_url)
    engine = ctx.initialize(model)
    trainer = Trainer(job, ctx.worker, engine, task, ctx.checkpoints, ctx.tracker, on_checkpoint)
    trainer.resume()
    trainer.extra["wandb_run_id"] = start_tracking(ctx)
    ctx.tracker.log("start", step=trainer.state.step, max_steps=job.training.max_steps, world_size=ctx.worker.world,
                    parameters=sum(p.numel() for p in model.parameters()), **task.describe())
    state = trainer.run()
    trainer.report_committed(ctx.checkpoints.close())  # also waits for the checkpoint written on SIGTERM
    if ctx.worker.is_main and state.stop_reason != "preempted":
        post_training(ctx, state.step)
    ctx.tracker.log("end", step=state.step, reason=state.stop_reason or "max_steps", best=trainer.best_summary())
    ctx.tracker.summary({"final_step": state.step, **trainer.best_summary()})
    ctx.tracker.finish()
    return exitcodes.PREEMPTED if state.stop_reason == "preempted" else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.run", description=__doc__)
    parser.add_argument("job", help="resolved job JSON written by `dlaunch submit`")
    args = parser.parse_args(argv)
    if os.environ.get("DLAUNCH_LOG_DIR"):
        redirect_output_to_log(os.environ["DLAUNCH_LOG_DIR"], os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    job = load_job_or_log(args.job)
    if job is None:
        return exitcodes.CONFIG_ERROR
    try:
        return train(job)
    except (DataError, ValueError) as exc:
        log.error("configuration error: %s", exc)
        return exitcodes.CONFIG_ERROR


if __name__ == "__main__":
    sys.exit(main())
