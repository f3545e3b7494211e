"""The per-node agent: torchrun, with the workers' meaningful exit codes passed through.

`python -m training.agent <torchrun arguments>` behaves exactly like `torchrun`, except that:

- a node whose worker failed with a configuration error exits with `exitcodes.CONFIG_ERROR`,
  and one stopped by SIGTERM exits with `exitcodes.PREEMPTED` (torchrun itself exits 1 for
  both), so that a Kubernetes podFailurePolicy and the local launcher can tell them apart;
- it is meant to be the container's PID 1, with no shell in front. The kernel drops a signal
  sent to PID 1 unless PID 1 has a handler for it, so the agent installs a SIGTERM handler
  before anything else and exits promptly with `PREEMPTED` while it is still starting up
  (importing torch, waiting for pod 0, joining the rendezvous). Once torch elastic starts the
  workers it installs its own handler (torch/distributed/elastic/multiprocessing/api.py
  PContext.start), which SIGTERMs the workers and raises `SignalException` after they exit or
  TORCH_ELASTIC_SHUTDOWN_TIMEOUT passes (agent/server/api.py SimpleElasticAgent.run -> _shutdown);
- with `DLAUNCH_RDZV_HOST` set (Kubernetes pods), it first waits until the rendezvous host is
  reachable (`training.rendezvous_wait`), exiting 69 if it never is;
- when its workers all exited 0 but rank 0 recorded a failure of its post-training work
  (export, upload) in `DLAUNCH_AGENT_STATUS_DIR`, it exits `exitcodes.POST_TRAINING_FAILED`.
  The worker itself exits 0 then, so torchrun does not restart the gang for work that comes
  after the final checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from training import exitcodes
from training.heap import defer_collection, settle_after_start

STATUS_DIR_ENV = "DLAUNCH_AGENT_STATUS_DIR"
POST_TRAINING_MARKER = "post-training-failed"


class StopRequested(BaseException):
    """SIGTERM before torch elastic took over the signal. A BaseException, like KeyboardInterrupt,
    so that no `except Exception` on the way (rendezvous, imports) swallows or wraps it."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise StopRequested(signum)


def exit_code_for(worker_codes: set[int]) -> int:
    """The node's exit code given its failed workers' exit codes."""
    if exitcodes.CONFIG_ERROR in worker_codes:
        return exitcodes.CONFIG_ERROR
    if worker_codes and worker_codes <= {exitcodes.PREEMPTED, -15}:
        return exitcodes.PREEMPTED
    return 1


def wait_for_rendezvous_host() -> bool:
    """In a pod (`DLAUNCH_RDZV_HOST` set): wait until pod 0 is reachable. True when ready or not asked."""
    host = os.environ.get("DLAUNCH_RDZV_HOST")
    if not host:
        return True
    from training.rendezvous_wait import wait_for_rendezvous

    return wait_for_rendezvous(host, int(os.environ.get("DLAUNCH_RDZV_PORT", "29500")),
                               int(os.environ.get("JOB_COMPLETION_INDEX", "0")),
                               float(os.environ.get("DLAUNCH_RDZV_WAIT_TIMEOUT", "900")))


def post_training_failure(status_dir: Path) -> str | None:
    """What rank 0 recorded about its failed post-training work, or None when nothing failed."""
    marker = status_dir / POST_TRAINING_MARKER
    return marker.read_text(encoding="utf-8", errors="replace").strip() if marker.is_file() else None


def run_torchrun(argv: list[str], status_dir: Path) -> int:
    """torchrun with `argv`; the node's exit code."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    settle_after_start()
    os.environ[STATUS_DIR_ENV] = str(status_dir)  # the workers inherit it
    try:
        run(parse_args(argv))
    except ChildFailedError as exc:
        codes = {failure.exitcode for failure in exc.failures.values()}
        print(f"[dlaunch agent] workers failed with exit codes {sorted(codes)}", file=sys.stderr, flush=True)
        return exit_code_for(codes)
    except SignalException as exc:
        print(f"[dlaunch agent] stopped by signal {exc.sigval}", file=sys.stderr, flush=True)
        return exitcodes.PREEMPTED
    failure = post_training_failure(status_dir)
    if failure is not None:
        print(f"[dlaunch agent] training finished, but post-training work failed: {failure}",
              file=sys.stderr, flush=True)
        return exitcodes.POST_TRAINING_FAILED
    return 0


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop)
    defer_collection()  # until torch is imported (training.heap)
    try:
        if not wait_for_rendezvous_host():
            from training.rendezvous_wait import UNAVAILABLE

            return UNAVAILABLE
        with tempfile.TemporaryDirectory(prefix="dlaunch-agent-") as status_dir:
            return run_torchrun(sys.argv[1:] if argv is None else argv, Path(status_dir))
    except StopRequested:
        print("[dlaunch agent] stopped by SIGTERM while starting up", file=sys.stderr, flush=True)
        return exitcodes.PREEMPTED


if __name__ == "__main__":
    sys.exit(main())
