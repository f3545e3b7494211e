"""The one worker entrypoint: `python -m training.run job.json`, on a laptop or in a pod.

Exit codes: 0 done, `exitcodes.CONFIG_ERROR` when the job or its data is wrong (a
`training.errors.ConfigError`: restarting cannot help), `exitcodes.PREEMPTED` after a checkpoint
written on SIGTERM (retriable), 1 with a traceback for any other failure (retriable; see
`training.failure`). Post-training work (quantize, export, upload on rank 0) runs after the
final checkpoint is committed and never fails the worker (see `training.after_training`).

The pieces live elsewhere, one job each: `training.context` builds the set-up,
`training.paths` names every path, `training.loop` trains, `training.after_training` exports.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from training import exitcodes
from training.config import ResolvedJob
from training.distributed import end_process, leave_process_group
from training.heap import defer_collection, settle_after_start
from training.failure import FailureDecision, make_decision

if TYPE_CHECKING:
    from training.context import TrainContext

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


def run_user_entrypoint(ctx: "TrainContext") -> int:
    """`training.entrypoint`: the user's function gets the context; its return value is the exit code."""
    from training.imports import load_object

    user_main = load_object(ctx.job.training.entrypoint or "", "training.entrypoint")
    code = int(user_main(ctx) or 0)
    ctx.checkpoints.close()
    return code


def train(job: ResolvedJob, on_checkpoint: Callable[[int, dict[str, Any]], None] | None = None) -> int:
    """Build task, model and engine, run the loop, and return the process exit code.
    `on_checkpoint(step, manifest_extra)` runs on every rank after each committed save (Ray uses it)."""
    from training.after_training import post_training
    from training.context import make_context, start_tracking
    from training.loop import Trainer
    from training.models.sharded import parameter_count

    ctx = make_context(job)
    if job.training.entrypoint:
        return run_user_entrypoint(ctx)
    task = ctx.make_task()
    model = task.prepare_model()
    if ctx.worker.is_main and not job.training.model.factory:
        from training.models.restore import save_model_info

        save_model_info(ctx.job_root, model, task, job.training.checkpoint.endpoint_url)
    engine = ctx.initialize(model)
    trainer = Trainer(job, ctx.worker, engine, task, ctx.checkpoints, ctx.tracker, on_checkpoint=on_checkpoint)
    trainer.resume()
    settle_after_start()
    trainer.extra["wandb_run_id"] = start_tracking(ctx)
    ctx.tracker.log("start", step=trainer.state.step, max_steps=job.training.max_steps, world_size=ctx.worker.world,
                    parameters=parameter_count(model), **task.describe())
    state = trainer.run()
    trainer.report_committed(ctx.checkpoints.close())  # also waits for the checkpoint written on SIGTERM
    if ctx.worker.is_main and state.stop_reason != "preempted":
        post_training(ctx, state.step, task)
    ctx.tracker.log("end", step=state.step, reason=state.stop_reason or "max_steps", best=trainer.best_summary())
    ctx.tracker.summary({"final_step": state.step, **trainer.best_summary()})
    ctx.tracker.finish()
    return exitcodes.PREEMPTED if state.stop_reason == "preempted" else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.run", description=__doc__)
    parser.add_argument("job", help="resolved job JSON written by `dlaunch submit`")
    args = parser.parse_args(argv)
    defer_collection()
    if os.environ.get("DLAUNCH_LOG_DIR"):
        redirect_output_to_log(os.environ["DLAUNCH_LOG_DIR"], os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    job = load_job_or_log(args.job)
    if job is None:
        return exitcodes.CONFIG_ERROR
    try:
        code = train(job)
    except Exception as exc:
        if make_decision(exc) is not FailureDecision.RAISE:
            raise  # retriable: the traceback goes to the rank log and the process exits 1
        log.error("configuration error: %s", exc)
        code = exitcodes.CONFIG_ERROR
    leave_process_group()
    return code


if __name__ == "__main__":
    end_process(main())  # an exception still leaves through the interpreter: a traceback and exit 1
