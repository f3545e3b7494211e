"""The per-node agent: torchrun, with the workers' meaningful exit codes passed through.

`python -m training.agent <torchrun arguments>` behaves exactly like `torchrun`, except that a
node whose worker failed with a configuration error exits with `exitcodes.CONFIG_ERROR` and
one stopped by SIGTERM exits with `exitcodes.PREEMPTED` (torchrun itself exits 1 for both),
so that a Kubernetes podFailurePolicy and the local launcher can tell them apart.
"""

from __future__ import annotations

import sys

from training import exitcodes


def exit_code_for(worker_codes: set[int]) -> int:
    """The node's exit code given its failed workers' exit codes."""
    if exitcodes.CONFIG_ERROR in worker_codes:
        return exitcodes.CONFIG_ERROR
    if worker_codes and worker_codes <= {exitcodes.PREEMPTED, -15}:
        return exitcodes.PREEMPTED
    return 1


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except ChildFailedError as exc:
        codes = {failure.exitcode for failure in exc.failures.values()}
        print(f"[dlaunch agent] workers failed with exit codes {sorted(codes)}", file=sys.stderr, flush=True)
        return exit_code_for(codes)
    except SignalException as exc:
        print(f"[dlaunch agent] stopped by signal {exc.sigval}", file=sys.stderr, flush=True)
        return exitcodes.PREEMPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
