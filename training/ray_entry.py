"""The Ray backend's driver: `python -m training.ray_entry job.json`.

Connects to the Ray cluster named by RAY_ADDRESS (a KubeRay RayJob sets it; `ray start` users
can export it), or starts a local Ray instance sized to the job (no dashboard), then runs the
TorchTrainer and shuts Ray down, also on SIGTERM / Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from training import exitcodes
from training.failure import decision_for_workers, exit_code

log = logging.getLogger("training.ray_entry")


def start_ray(world_size: int) -> None:
    import ray

    # Ray Train patches print() in its workers to tee into its logger, which writes to stderr; a
    # worker's stdout and stderr both go to its rank log, so every printed line would appear twice.
    runtime_env = {"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}}
    address = os.environ.get("RAY_ADDRESS")
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True, runtime_env=runtime_env)
    else:
        ray.init(num_cpus=world_size + 1, include_dashboard=False, log_to_driver=True, runtime_env=runtime_env,
                 configure_logging=False, _temp_dir=os.environ.get("DLAUNCH_RAY_TMP"))


def failure_causes(error: BaseException) -> list[BaseException]:
    """The exceptions behind a Ray Train failure: each worker's own exception object (Ray Train v2
    `WorkerGroupError.worker_failures`), or the controller's (`ControllerError.controller_failure`)."""
    workers = getattr(error, "worker_failures", None)
    if workers:
        return list(workers.values())
    controller = getattr(error, "controller_failure", None)
    return [controller] if isinstance(controller, BaseException) else [error]


def stop_on_sigterm() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.ray_entry", description=__doc__)
    parser.add_argument("job")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from training.run import load_job_or_log

    job = load_job_or_log(args.job)
    if job is None:
        return exitcodes.CONFIG_ERROR
    import ray
    import ray.train

    from training.engine.ray import build_trainer

    stop_on_sigterm()
    start_ray(job.world_size)
    try:
        result = build_trainer(job, str(Path(job.run_dir).resolve() / "ray")).fit()
        log.info("Ray Train finished: %s", result.metrics)
        return 0
    except KeyboardInterrupt:
        log.warning("stopped by signal; shutting Ray down")
        return exitcodes.PREEMPTED
    except ray.train.TrainingFailedError as exc:
        log.error("Ray Train failed: %s", exc)
        return exit_code(decision_for_workers(failure_causes(exc)))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
