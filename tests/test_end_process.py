"""`training.distributed.end_process`: a worker's last step, run in a fresh interpreter.

The process holds its gloo group past `destroy_process_group`, as DeepSpeed's engine does, after an
asynchronous all-reduce and a barrier: the state in which the interpreter's shutdown aborted ranks
here. The test checks that the process ends with its own exit code, after its non-daemon threads,
atexit handlers and buffered output have run as at a normal exit. It does not reproduce the abort:
that happened in about 1 run of 60 with two ranks, too rarely for a test. The two-rank script in
tests/test_shm_allreduce.py and the job tests leave through this same function."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKER = """
import atexit, sys, threading, time
from pathlib import Path
import torch
import torch.distributed as dist
from training.distributed import end_process, init_distributed, leave_process_group

out = Path(sys.argv[1])
init_distributed()
held = dist.group.WORLD  # as DeepSpeed's engine keeps its data-parallel group
dist.all_reduce(torch.ones(4), async_op=True)  # the tensor is gloo's alone once this line ends
dist.barrier()
atexit.register(lambda: (out / "atexit").write_text("ran"))
threading.Thread(target=lambda: (time.sleep(0.3), (out / "thread").write_text("joined"))).start()
print("buffered, never flushed by the worker")
leave_process_group()
end_process(78)
"""


def test_a_worker_ends_with_its_code_after_threads_atexit_and_output(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)  # a world of one, as `init_distributed` makes without torchrun
    done = subprocess.run([sys.executable, "-c", WORKER, str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 78, done.stderr[-2000:]
    assert done.stdout.strip() == "buffered, never flushed by the worker"
    assert (tmp_path / "thread").read_text() == "joined"
    assert (tmp_path / "atexit").read_text() == "ran"
