"""Process-group set-up for a worker started by torchrun (or alone, as a world of one)."""

from __future__ import annotations

import atexit
import os
import socket
import sys
import threading
from dataclasses import dataclass
from typing import Any, NoReturn


@dataclass(frozen=True)
class WorkerInfo:
    rank: int
    world: int
    local_rank: int
    device: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def select_accelerator() -> str:
    """'cuda' when a GPU is visible, else 'cpu'; tells DeepSpeed before it is imported."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    os.environ.setdefault("DS_ACCELERATOR", device)
    return device


def init_distributed() -> WorkerInfo:
    """Join the process group torchrun describes (gloo on CPU, nccl on GPU)."""
    import torch
    import torch.distributed as dist

    device = select_accelerator()
    if dist.is_initialized():  # Ray Train's TorchTrainer has already set up the group
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return WorkerInfo(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank,
                          device=f"cuda:{local_rank}" if device == "cuda" else "cpu")
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(free_port()))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return WorkerInfo(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank,
                      device=f"cuda:{local_rank}" if device == "cuda" else "cpu")


def leave_process_group() -> None:
    """Destroy the process group this process joined, if any (see `end_process` for why that alone
    does not make the interpreter's shutdown safe).

    `destroy_process_group` shuts every backend down in order (torch/distributed/distributed_c10d.py
    `destroy_process_group`: `pg.shutdown()` for each group, then the group maps are cleared). The
    caller skips it on an unexpected failure: torch notes there that ncclCommAbort was a collective
    call in some NCCL versions, which a failed peer would never join.
    """
    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def end_process(code: int) -> NoReturn:
    """End this process with `code` as the interpreter would, but without its finalization.

    The interpreter's shutdown killed ranks with SIGABRT after their work was done ("terminate called
    without an active exception"); a worker that had returned 78 then reported 1. It happened in 1 of
    60 runs of the two-rank shared-memory script, and in 2 of the fresh-clone suite's tests. Core dumps
    showed the cause. A gloo worker thread (`ProcessGroupGloo::runLoop`) was still destroying the last
    barrier's work, which held the last reference to an earlier asynchronous all-reduce's tensor.
    Freeing that tensor's Python object takes the GIL. Once the interpreter finalizes, taking the GIL
    ends the thread (CPython `take_gil` -> `PyThread_exit_thread`). The unwind runs into a noexcept
    destructor, and the process aborts.

    Destroying the group first does not prevent it, because the group outlives `destroy_process_group`
    while anything still holds it. Seen here: DeepSpeed's engine and optimizer (`_dp_group` on every
    parameter), deepspeed/utils/groups.py's module globals, and default arguments bound at import
    (`group=group.WORLD` in torch/distributed/nn/functional.py, `TorchBackend.barrier` in
    deepspeed/comm/torch.py). The same race at shutdown is pytorch/pytorch#190489; #179291 tried
    destroying the groups in an atexit handler, which does not help while they are still held.

    So this does what the interpreter's shutdown does while Python is still whole: it joins
    non-daemon threads, runs the atexit handlers (logging's flush, W&B's, multiprocessing's), and
    flushes stdout and stderr. Then it leaves with `os._exit`, before any C++ thread can be torn down
    under a finalizing interpreter.
    """
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or gone: nothing is left to write
            pass
    os._exit(code)


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Send a picklable value from `src` to every rank."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(values: list[float]) -> list[float]:
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()
