"""One rank of `tests/test_shm_allreduce.py`'s jobs: join the group as dlaunch's worker does and
connect DeepSpeed; then `sums` (under torchrun) sums through it and through gloo and prints what was
seen (rank 0), and `peer-dies` kills rank 1 while rank 0 waits for it in a shared-memory sum."""

from __future__ import annotations

import json
import os
import signal
import sys

import torch
import torch.distributed as dist

from training.distributed import end_process, init_distributed, leave_process_group
from training.engine.shm_allreduce import agreed, connect, segment_path


def main(mode: str) -> None:
    worker = init_distributed()
    connected = connect(worker.device)
    import deepspeed.comm as ds_comm

    if mode == "peer-dies":
        if worker.rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        ds_comm.all_reduce(torch.ones(4))  # rank 0 waits for rank 1 here; its PeerWatch ends it
        sys.exit(0)  # not reached: rank 0 leaves with the watch's exit code

    served = getattr(ds_comm.comm.cdb.all_reduce, "watch", None)
    before = served.count if served else 0
    gradients = torch.randn(3_000_000, generator=torch.Generator().manual_seed(worker.rank))  # > the op's 1 MiB path
    small = torch.randn(1000, generator=torch.Generator().manual_seed(10 + worker.rank))
    sums = {"gradients": gradients, "small": small}
    expected = {name: tensor.clone() for name, tensor in sums.items()}
    for name, tensor in sums.items():
        dist.all_reduce(expected[name])  # gloo, torch's own
        ds_comm.all_reduce(tensor)  # what DeepSpeed's engine calls
    routed = served.count - before if served else 0
    largest = torch.arange(4.0) + worker.rank
    ds_comm.all_reduce(largest, op=ds_comm.ReduceOp.MAX)  # not a sum: gloo's
    handle = ds_comm.all_reduce(torch.ones(4), async_op=True)  # asynchronous: gloo's
    handle.wait()
    report = {
        "connected": connected,
        "local_size": os.environ.get("LOCAL_SIZE"),
        "equal": {name: torch.equal(tensor, expected[name]) for name, tensor in sums.items()},
        "routed_sums": routed,
        "routed_total": (served.count if served else 0),
        "max": largest.tolist(),
        "segment_left": segment_path(worker.rank).exists(),
        "agreed_when_ranks_differ": agreed(2 if worker.rank == 0 else None),
        "agreed_when_alike": agreed(2),
    }
    dist.barrier()
    if worker.rank == 0:
        print("RESULT " + json.dumps(report), flush=True)
    leave_process_group()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sums")
    end_process(0)  # as dlaunch's worker leaves (training.run)
