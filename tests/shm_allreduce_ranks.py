"""One rank of `tests/test_shm_allreduce.py`'s job, started by torchrun: join the group as dlaunch's
worker does, connect DeepSpeed, sum through it and through gloo, and print what was seen (rank 0)."""

from __future__ import annotations

import json
import os

import torch
import torch.distributed as dist

from training.distributed import init_distributed
from training.engine.shm_allreduce import agreed, connect, segment_path


def main() -> None:
    worker = init_distributed()
    connected = connect(worker.device)
    import deepspeed.comm as ds_comm

    served = getattr(ds_comm.comm.cdb.all_reduce, "served", None)
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
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
