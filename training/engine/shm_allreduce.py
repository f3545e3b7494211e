"""Sum DeepSpeed's all-reduces through shared memory when every rank of a CPU job is on one machine.

gloo, the CPU process group, sums a tensor by sending it over TCP, loopback included: 15.2 ms for
llama-tiny's 5.3 M fp32 gradients between 2 ranks here. DeepSpeed ships a shared-memory all-reduce
for CPUs (deepspeed/ops/csrc/cpu/comm/shm.cpp, which `make install` builds with the other CPU ops,
see `training.prebuild`): each rank copies its tensor into a /dev/shm segment that every rank maps,
and sums slices of them in place, 5.0 ms for the same gradients, bit for bit the same sums. Its
`TorchBackend` sets it up when `LOCAL_SIZE` equals the world size (shm_interface.cpp `initialize`;
DeepSpeed's own launcher exports `LOCAL_SIZE`, launcher/launch.py) and offers it as
`inference_all_reduce` (comm/torch.py), a plain in-place sum despite the name. `connect` builds
that backend with `LOCAL_SIZE` set and routes DeepSpeed's blocking SUM all-reduces over all ranks
(ZeRO-0's gradient buckets among them) to it; every other collective stays on gloo.

It is used only where it is safe, else DeepSpeed's backend is left as it is:
- the CPU accelerator, more than one rank, and all of them on this machine (`LOCAL_WORLD_SIZE` ==
  `WORLD_SIZE`): the op has no network path, and crashes a process where it was not set up;
- no more ranks than the CPUs this process may use: a rank waiting for its peers spins (shm.cpp
  `wait_buffer_state_until_2`), which would take the CPU a peer needs;
- room in /dev/shm for every rank's segment (a container's default 64 MB is not): DeepSpeed does not
  check that its segment was written whole, and a short one kills the process with SIGBUS;
- every rank deciding alike (one gloo all-reduce agrees): a rank that set `LOCAL_SIZE` alone would
  wait forever for its peers' segments;
- DeepSpeed's backend not built yet (its set-up reads `LOCAL_SIZE` once), and not turned off with
  `DLAUNCH_SHM_ALLREDUCE=0`.

The op waits for its peers by spinning, without a timeout: a rank whose peer was killed would spin
until its agent kills it 30 s after SIGTERM (torchrun's `_close`; Python runs the worker's SIGTERM
handler only between bytecodes), where gloo fails at once on the closed socket. So a `PeerWatch`
thread checks, while a sum has waited over half a second, that every peer's process still runs,
and ends the rank with exit code 1 (a retriable failure) when one is gone.

DeepSpeed never removes the segments (about 66 MB per rank, `shared_close` is not called), so after
every rank has mapped its peers' (a barrier) each rank unlinks its own name: the memory stays
mapped until the process exits and is then freed, and no job leaves /dev/shm fuller.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger("training.shm_allreduce")

SEGMENT_PREFIX = "deepspeed_allreduce_buffer"  # shm.cpp SHM_BUFFER_NAME
SEGMENT_BYTES = 8 + 2 * (1 << 20) + 2 * (32 << 20)  # shm.cpp `struct allreduce_workspace`: 2 states, 4 buffers
SHM_DIR = Path("/dev/shm")
KERNEL_LEVEL = {"float32": 1, "bfloat16": 2, "float16": 2}  # comm/torch.py: fp32 needs AVX2, 16-bit AVX-512BW
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota (a pod's limit)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()
    except (OSError, ValueError):
        return cpus
    return cpus if quota == "max" else max(1, min(cpus, int(quota) // int(period)))


def local_world(device: str) -> int | None:
    """The world size when the shared-memory sum may serve this job (see the module docstring), else None."""
    if device != "cpu" or os.environ.get("DLAUNCH_SHM_ALLREDUCE", "1") == "0":
        return None
    world, local = os.environ.get("WORLD_SIZE", "1"), os.environ.get("LOCAL_WORLD_SIZE")
    if not world.isdigit() or int(world) < 2 or local != world or int(world) > usable_cpus():
        return None
    try:
        room = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return int(world) if room.f_bavail * room.f_frsize >= int(world) * SEGMENT_BYTES else None


def agreed(world: int | None) -> int | None:
    """`world` when every rank of the process group decided on it, else None (one gloo all-reduce)."""
    import torch
    import torch.distributed as dist

    decision = torch.tensor([world or 0])
    dist.all_reduce(decision, op=dist.ReduceOp.MIN)
    return world if world and int(decision.item()) == world else None


def segment_path(rank: int) -> Path:
    """The /dev/shm file DeepSpeed creates for `rank` (shm.cpp `shm_initialize`: uid, master address and port)."""
    address, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
    return SHM_DIR / f"{SEGMENT_PREFIX}_{os.getuid()}_{address}_{port}_{rank}"


def connect(device: str) -> bool:
    """Build DeepSpeed's communication backend over the process group this worker has joined, with
    the shared-memory sum where it is safe; True when DeepSpeed's all-reduces now use it. Call it after
    `training.distributed.init_distributed` and before anything else starts DeepSpeed."""
    import deepspeed.comm as ds_comm
    import torch.distributed as dist

    if ds_comm.is_initialized():  # built by someone else, perhaps without LOCAL_SIZE: leave it be
        return False
    world = agreed(local_world(device))
    if world is not None:
        os.environ["LOCAL_SIZE"] = str(world)
    ds_comm.init_distributed(verbose=False)
    backend = ds_comm.comm.cdb
    if getattr(backend, "shm_comm_op", None) is None:  # the op is not built for this accelerator
        return False
    if os.environ.get("LOCAL_SIZE", "-") == os.environ.get("WORLD_SIZE"):  # DeepSpeed made segments (for
        dist.barrier()  # a LOCAL_SIZE of the user's too): once every rank has mapped its peers', names can go
        segment_path(dist.get_rank()).unlink(missing_ok=True)
    if world is None:
        return False
    level = getattr(backend, "shm_vector_kernel_level", 0)
    if level < 1:
        log.info("gloo sums gradients: this CPU lacks AVX2, which DeepSpeed's shared-memory sum needs")
        return False
    peers: list[Any] = [None] * world
    dist.all_gather_object(peers, os.getpid())
    watch = PeerWatch({rank: pid for rank, pid in enumerate(peers) if rank != dist.get_rank()})
    watch.start()
    route_all_reduce(backend, world, level, watch)
    log.info("DeepSpeed sums all-reduces over the %d ranks on this machine through shared memory", world)
    return True


def process_gone(pid: int) -> bool:
    """True when `pid` has exited (no /proc entry, or a zombie its parent has not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"  # the state follows the command name's closing parenthesis


class PeerWatch:
    """Ends this rank when a peer's process is gone while this rank waits in a shared-memory sum.

    The op releases the GIL while it runs (measured: a thread ticked 29 times during a 3 s wait for
    a late peer), so the watching thread runs while the main thread spins. `count` is the number of
    sums served."""

    def __init__(self, peers: dict[int, int], poll_s: float = 0.5) -> None:
        self.peers = peers  # rank -> pid
        self.poll_s = poll_s
        self.count = 0
        self.waiting_since: float | None = None

    def start(self) -> None:
        threading.Thread(target=self._watch, name="shm-allreduce-peers", daemon=True).start()

    @contextmanager
    def summing(self) -> Iterator[None]:
        self.waiting_since = time.monotonic()
        try:
            yield
        finally:
            self.waiting_since = None
            self.count += 1

    def gone(self) -> list[int]:
        """Ranks whose process no longer runs."""
        return [rank for rank, pid in self.peers.items() if process_gone(pid)]

    def _watch(self) -> None:
        while True:
            time.sleep(self.poll_s)
            since = self.waiting_since
            if since is None or time.monotonic() - since < self.poll_s:
                continue
            gone = self.gone()
            if gone:
                log.error("rank(s) %s exited while this rank waited for them in a shared-memory all-reduce; "
                          "exiting so that the agent restarts the group", gone)
                sys.stderr.flush()
                os._exit(1)


def served_by_shm(tensor: "torch.Tensor", is_sum: bool, async_op: bool, group_size: int, world: int,
                  level: int) -> bool:
    """Whether the shared-memory op can do this all-reduce: a blocking sum over every rank of a
    contiguous CPU tensor of a type its kernels at this CPU's `level` handle."""
    kind = str(tensor.dtype).removeprefix("torch.")
    return (is_sum and not async_op and group_size == world and tensor.device.type == "cpu"
            and tensor.is_contiguous() and tensor.numel() > 0 and KERNEL_LEVEL.get(kind, level + 1) <= level)


def route_all_reduce(backend: Any, world: int, level: int, watch: PeerWatch) -> None:
    """Send the `backend.all_reduce` calls the shared-memory op can serve to it under `watch`, the
    rest to gloo as before; the new `backend.all_reduce.watch` counts the former."""
    import torch
    import torch.distributed as dist

    gloo_all_reduce = backend.all_reduce

    def all_reduce(tensor: "torch.Tensor", op: Any = dist.ReduceOp.SUM, group: Any = None,
                   async_op: bool = False) -> Any:
        is_sum = backend._reduce_op(op) == dist.ReduceOp.SUM
        group_size = world if group is None else dist.get_world_size(group)
        if not served_by_shm(tensor, is_sum, async_op, group_size, world, level):
            return gloo_all_reduce(tensor, op=op, group=group, async_op=async_op)
        with watch.summing():
            torch.ops.deepspeed.inference_all_reduce_(tensor)
        return None

    all_reduce.watch = watch  # type: ignore[attr-defined]
    backend.all_reduce = all_reduce
