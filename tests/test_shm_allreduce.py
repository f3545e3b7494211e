"""DeepSpeed's all-reduces through shared memory on one CPU machine (`training.engine.shm_allreduce`).

The fast tests check when the shared-memory sum may serve a job and which calls it takes. The slow
one starts two real ranks under torchrun, connects DeepSpeed as a worker does, and checks that its
sums equal gloo's bit for bit, that only blocking sums over all ranks took the shared-memory path,
that no /dev/shm segment is left behind, and that ranks deciding differently both keep gloo; another
kills one rank while its peer waits for it in a shared-memory sum, which must end the peer (exit 1)
rather than leave it spinning until an agent's SIGKILL. Not verified here: a machine without AVX2 (the sum then
stays on gloo, by the kernel level DeepSpeed reports) and the 16-bit kernels' numerics.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.engine import shm_allreduce
from training.distributed import free_port
from training.engine.shm_allreduce import local_world, process_gone, served_by_shm, usable_cpus

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def two_local_ranks(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.delenv("DLAUNCH_SHM_ALLREDUCE", raising=False)
    monkeypatch.setattr(shm_allreduce, "usable_cpus", lambda: 2)
    return monkeypatch


def test_two_ranks_on_one_cpu_machine_may_share_memory(two_local_ranks: pytest.MonkeyPatch) -> None:
    assert local_world("cpu") == 2


@pytest.mark.parametrize("change", ["gpu", "one rank", "two machines", "more ranks than cpus", "no room in /dev/shm",
                                    "turned off"])
def test_otherwise_gloo_keeps_every_sum(two_local_ranks: pytest.MonkeyPatch, change: str) -> None:
    device = "cuda" if change == "gpu" else "cpu"
    if change == "one rank":
        two_local_ranks.setenv("WORLD_SIZE", "1")
        two_local_ranks.setenv("LOCAL_WORLD_SIZE", "1")
    elif change == "two machines":
        two_local_ranks.setenv("LOCAL_WORLD_SIZE", "1")
    elif change == "more ranks than cpus":
        two_local_ranks.setattr(shm_allreduce, "usable_cpus", lambda: 1)
    elif change == "no room in /dev/shm":
        two_local_ranks.setattr(shm_allreduce, "SEGMENT_BYTES", 1 << 60)
    elif change == "turned off":
        two_local_ranks.setenv("DLAUNCH_SHM_ALLREDUCE", "0")
    assert local_world(device) is None


def test_usable_cpus_is_capped_by_the_cgroup_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(shm_allreduce, "CGROUP_CPU_MAX", cpu_max)
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus() == affinity  # no cgroup file
    cpu_max.write_text("max 100000\n")
    assert usable_cpus() == affinity
    cpu_max.write_text("150000 100000\n")  # a pod limited to 1.5 CPUs can keep one spinning rank busy
    assert usable_cpus() == 1


@pytest.mark.parametrize(("case", "served"), [
    ("fp32 sum over all ranks", True),
    ("bf16 on an AVX2-only cpu", False),
    ("bf16 with AVX-512BW", True),
    ("asynchronous", False),
    ("not a sum", False),
    ("a subgroup", False),
    ("not contiguous", False),
    ("empty", False),
    ("int64", False),
])
def test_which_all_reduces_take_the_shared_memory_path(case: str, served: bool) -> None:
    tensor = torch.zeros(8, 4)
    args = {"is_sum": True, "async_op": False, "group_size": 2, "world": 2, "level": 1}
    if case.startswith("bf16"):
        tensor = tensor.bfloat16()
        args["level"] = 2 if "512" in case else 1
    elif case == "asynchronous":
        args["async_op"] = True
    elif case == "not a sum":
        args["is_sum"] = False
    elif case == "a subgroup":
        args["group_size"] = 1
    elif case == "not contiguous":
        tensor = tensor.t()
    elif case == "empty":
        tensor = torch.zeros(0)
    elif case == "int64":
        tensor = tensor.long()
    assert served_by_shm(tensor, **args) is served


@pytest.mark.slow
def test_two_local_ranks_sum_through_shared_memory_as_gloo_does(tmp_path: Path) -> None:
    if usable_cpus() < 2:
        pytest.skip("fewer than 2 usable CPUs: the shared-memory sum is not used here")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    env.pop("DLAUNCH_SHM_ALLREDUCE", None)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone",
                           str(REPO / "tests" / "shm_allreduce_ranks.py")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert report["connected"] and report["local_size"] == "2"
    assert report["equal"] == {"gradients": True, "small": True}  # both of the op's paths, as gloo sums
    assert report["routed_sums"] == 2 and report["routed_total"] == 2  # MAX and the async sum went to gloo
    assert report["max"] == [1.0, 2.0, 3.0, 4.0]
    assert report["segment_left"] is False
    assert report["agreed_when_ranks_differ"] is None and report["agreed_when_alike"] == 2


def test_a_process_is_gone_once_it_exits_even_before_it_is_reaped() -> None:
    assert not process_gone(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert not process_gone(child.pid)
    child.send_signal(signal.SIGKILL)
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped: a zombie
    assert process_gone(child.pid)
    child.wait()
    assert process_gone(child.pid)


@pytest.mark.slow
def test_a_rank_waiting_for_a_dead_peer_exits_instead_of_spinning(tmp_path: Path) -> None:
    if usable_cpus() < 2:
        pytest.skip("fewer than 2 usable CPUs: the shared-memory sum is not used here")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
           "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    env.pop("DLAUNCH_SHM_ALLREDUCE", None)
    ranks = [subprocess.Popen([sys.executable, str(REPO / "tests" / "shm_allreduce_ranks.py"), "peer-dies"],
                              env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(2)]
    outputs = [rank.communicate(timeout=300)[0] for rank in ranks]
    assert ranks[1].returncode == -signal.SIGKILL
    assert ranks[0].returncode == 1, outputs[0][-3000:]  # not -9 (an agent's kill) nor a hang
    assert "rank(s) [1] exited while this rank waited for them" in outputs[0]
