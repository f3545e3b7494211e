"""The one worker entrypoint: `python -m training.run job.json`, on a laptop or in a pod.

Exit codes: 0 done, `exitcodes.CONFIG_ERROR` when the job or its data is wrong (restarting
cannot help), `exitcodes.PREEMPTED` after a checkpoint written on SIGTERM (retriable).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from training import exitcodes
from training.config import ResolvedJob
from training.data.sources import DataError

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


def job_root(job: ResolvedJob) -> Path:
    """`<checkpoint uri>/<job name>`: where this job's checkpoints and tokenizer live."""
    return Path(job.training.checkpoint.uri.removeprefix("file://")) / job.name


def train(job: ResolvedJob) -> int:
    """Build data, model and engine, run the loop, and return the process exit code."""
    from training.checkpoint.manager import CheckpointManager
    from training.distributed import init_distributed
    from training.engine.deepspeed import initialize
    from training.lm_task import build_model, load_lm_data
    from training.loop import Trainer
    from training.tracking import Tracker

    worker = init_distributed()
    root = job_root(job)
    data = load_lm_data(job, worker, root)
    model = build_model(job, data.vocab_size)
    engine, _ = initialize(model, job.training, job.layout)
    stopping = job.training.eval.early_stopping
    manager = CheckpointManager(str(root / "checkpoints"), worker.rank, worker.world,
                                job.training.checkpoint.keep_last, job.training.checkpoint.keep_best,
                                stopping.mode if stopping else "min")
    tracker = Tracker(job.run_dir, enabled=worker.is_main)
    trainer = Trainer(job, worker, engine, data.train, data.validation, manager, tracker)
    trainer.resume()
    run_id = None
    if worker.is_main:
        latest = manager.latest()
        run_id = tracker.start_wandb(job.training.tracking.wandb, job.name,
                                     latest.manifest.get("wandb_run_id") if latest else None,
                                     job.model_dump(mode="json", by_alias=True), job.run_dir)
    trainer.extra["wandb_run_id"] = run_id
    parameters = sum(p.numel() for p in model.parameters())
    tracker.log("start", step=trainer.state.step, max_steps=job.training.max_steps, parameters=parameters,
                world_size=worker.world, train_sequences=len(data.train), validation_sequences=len(data.validation))
    state = trainer.run()
    tracker.log("end", step=state.step, reason=state.stop_reason or "max_steps")
    tracker.summary({"final_step": state.step, "eval_loss": state.history.get("eval_loss", [None])[-1]})
    tracker.finish()
    return exitcodes.PREEMPTED if state.stop_reason == "preempted" else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.run", description=__doc__)
    parser.add_argument("job", help="resolved job JSON written by `dlaunch submit`")
    args = parser.parse_args(argv)
    if os.environ.get("DLAUNCH_LOG_DIR"):
        redirect_output_to_log(os.environ["DLAUNCH_LOG_DIR"], os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        job = load_job(args.job)
    except (OSError, ValidationError) as exc:
        log.error("cannot read the job file %s: %s", args.job, exc)
        return exitcodes.CONFIG_ERROR
    try:
        return train(job)
    except (DataError, ValueError) as exc:
        log.error("configuration error: %s", exc)
        return exitcodes.CONFIG_ERROR


if __name__ == "__main__":
    sys.exit(main())
