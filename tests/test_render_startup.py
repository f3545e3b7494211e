"""What a rendered DeepSpeed pod runs at start-up, with real processes: the node agent, which
waits for the rendezvous host, stops at once on SIGTERM while starting up, runs torchrun, and
passes the workers' exit codes (and a failure of post-training work) through."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest_k8s import REPO, env_of, render_objects, small_spec_data, spec_of
from launcher.targets.kubernetes.render import NODE_COMMAND
from training import agent, rendezvous_wait
from training.exitcodes import CONFIG_ERROR, POST_TRAINING_FAILED, PREEMPTED

UNRESOLVABLE = "dlaunch-no-such-host.invalid"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeClock:
    """Time that advances only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


# --- training.rendezvous_wait -----------------------------------------------------------------

def test_wait_returns_once_the_probe_succeeds(capsys: pytest.CaptureFixture[str]) -> None:
    answers = iter([(False, "x does not resolve yet")] * 40 + [(True, "x:1 accepts connections")])
    clock = FakeClock()
    assert rendezvous_wait.wait_for_rendezvous("x", 1, 3, timeout_s=60, probe=lambda *_: next(answers),
                                               clock=clock, sleep=clock.sleep)
    err = capsys.readouterr().err
    assert "rank 3 waiting for rendezvous host x:1" in err
    assert "still waiting (30s): x does not resolve yet" in err
    assert "ready after 40.0s: x:1 accepts connections" in err


def test_wait_gives_up_after_the_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    assert not rendezvous_wait.wait_for_rendezvous("x", 1, 1, timeout_s=5, probe=lambda *_: (False, "no"),
                                                   clock=clock, sleep=clock.sleep)
    assert clock.now == 5
    assert "error: gave up after 5s: no" in capsys.readouterr().err


def test_probe_for_an_unresolvable_host() -> None:
    assert rendezvous_wait.reachable(UNRESOLVABLE, 29500, 1) == (False, f"{UNRESOLVABLE} does not resolve yet")


def test_rank_0_needs_the_name_to_resolve_to_itself() -> None:
    ready, detail = rendezvous_wait.reachable("localhost", free_port(), 0)
    assert ready and "resolves to this pod" in detail


def test_other_ranks_need_the_port_to_accept_connections() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert rendezvous_wait.reachable("127.0.0.1", port, 1)[0]
    ready, detail = rendezvous_wait.reachable("127.0.0.1", port, 1)
    assert not ready and f"port {port} does not accept connections yet" in detail


def test_module_waits_for_a_late_listener_and_exits_0() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "training.rendezvous_wait", "--host", "127.0.0.1", "--port",
                             str(port), "--rank", "2", "--timeout", "60", "--interval", "0.1"],
                            cwd=REPO, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    assert proc.poll() is None, "returned before anything listened"
    with socket.create_server(("127.0.0.1", port)):
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "ready after" in err and f"127.0.0.1:{port} accepts connections" in err


def test_module_exits_unavailable_when_the_host_never_resolves() -> None:
    out = subprocess.run([sys.executable, "-m", "training.rendezvous_wait", "--host", UNRESOLVABLE, "--port", "29500",
                          "--rank", "1", "--timeout", "0.5", "--interval", "0.1"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == rendezvous_wait.UNAVAILABLE
    assert "gave up" in out.stderr and "headless Service" in out.stderr


# --- the container command: the node agent --------------------------------------------------

WORKER = """\
import os, signal, sys, time
code = int(sys.argv[1])
if code == -1:
    def stop(*_):
        print("checkpointing on SIGTERM", flush=True)
        sys.exit(75)
    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    time.sleep(120)
if code == -2:  # what training.run does when rank 0's export fails after the last checkpoint
    if os.environ["RANK"] == "0":
        with open(os.path.join(os.environ["DLAUNCH_AGENT_STATUS_DIR"], "post-training-failed"), "w") as f:
            f.write("step 9: OSError: upload refused")
    sys.exit(0)
sys.exit(code if os.environ["RANK"] == "1" else 0)
"""


def node_env(port: int, host: str = "localhost", index: str = "0") -> dict[str, str]:
    """The environment the rendered pod gives the agent (plus PATH to this interpreter)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "JOB_COMPLETION_INDEX": index,
            "DLAUNCH_RDZV_HOST": host, "DLAUNCH_RDZV_PORT": str(port), "DLAUNCH_RDZV_WAIT_TIMEOUT": "30"}


def start_node(tmp_path: Path, worker_code: int) -> tuple[subprocess.Popen[str], Path]:
    """The rendered container command, as pod 0 of a one-node job with two workers on loopback."""
    pytest.importorskip("torch")
    port, log = free_port(), tmp_path / "node.log"
    (tmp_path / "worker.py").write_text(WORKER)
    args = ["--nnodes=1", "--nproc-per-node=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=localhost:{port}",
            "--rdzv-id=startup-test", "--max-restarts=0", "--monitor-interval=0.2", "--no-python",
            sys.executable, str(tmp_path / "worker.py"), str(worker_code)]
    proc = subprocess.Popen([*NODE_COMMAND, *args], cwd=REPO, env=node_env(port),
                            stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)
    return proc, log


WORKER_EXITS = {"success": (0, 0), "config-error": (CONFIG_ERROR, CONFIG_ERROR), "preempted": (PREEMPTED, PREEMPTED),
                "crash": (3, 1), "post-training-failed": (-2, POST_TRAINING_FAILED)}


@pytest.mark.slow
@pytest.mark.parametrize("worker_code,pod_code", WORKER_EXITS.values(), ids=WORKER_EXITS.keys())
def test_pod_exit_code_follows_the_workers(tmp_path: Path, worker_code: int, pod_code: int) -> None:
    proc, log = start_node(tmp_path, worker_code)
    assert proc.wait(timeout=120) == pod_code, log.read_text()
    assert "rendezvous_wait: ready after" in log.read_text()


@pytest.mark.slow
def test_sigterm_to_the_pod_lets_workers_checkpoint_and_exits_preempted(tmp_path: Path) -> None:
    proc, log = start_node(tmp_path, -1)
    deadline = time.monotonic() + 90
    while log.read_text().count("ready\n") < 2:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # what the kubelet sends to the container's main process
    assert proc.wait(timeout=60) == PREEMPTED, log.read_text()
    assert log.read_text().count("checkpointing on SIGTERM") == 2


def test_sigterm_while_waiting_for_pod_0_exits_preempted_at_once(tmp_path: Path) -> None:
    """Cancel, preemption or Kueue suspension during start-up: the agent stops within seconds
    with the retriable code instead of sitting out the grace period until SIGKILL."""
    log = tmp_path / "node.log"
    proc = subprocess.Popen([*NODE_COMMAND, "--nnodes=2", "-m", "training.run", "job.json"], cwd=REPO,
                            env=node_env(free_port(), UNRESOLVABLE, "1"), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while "waiting for rendezvous host" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    # One that ignored the signal would sit out DLAUNCH_RDZV_WAIT_TIMEOUT (30 s) and then exit with
    # the rendezvous failure's code: the code and the message below are what prove it stopped.
    assert proc.wait(timeout=25) == PREEMPTED, log.read_text()
    assert "stopped by SIGTERM while starting up" in log.read_text()


def test_standalone_wait_exits_preempted_on_sigterm() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "training.rendezvous_wait", "--host", UNRESOLVABLE, "--port", "1",
                             "--rank", "1", "--timeout", "60", "--interval", "0.1"], cwd=REPO,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and "waiting for rendezvous host" in proc.stderr.readline()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == PREEMPTED


def test_post_training_failure_is_read_from_the_status_dir(tmp_path: Path) -> None:
    assert agent.post_training_failure(tmp_path) is None
    (tmp_path / agent.POST_TRAINING_MARKER).write_text("step 9: OSError: upload refused\n")
    assert agent.post_training_failure(tmp_path) == "step 9: OSError: upload refused"


def test_startup_uses_only_environment_the_pod_gets() -> None:
    """Every variable the agent's start-up reads is set in the rendered container (or by the Job)."""
    data = small_spec_data()
    data["training"]["checkpoint"] = {"uri": "s3://unit-bucket/checkpoints"}
    job = next(obj for obj in render_objects(spec_of(data)) if obj["kind"] == "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    provided = set(env_of(container)) | {"JOB_COMPLETION_INDEX"}
    source = Path(agent.__file__).read_text()
    used = set(re.findall(r'os\.environ\.get\("([A-Z_]+)"', source)) - {agent.STATUS_DIR_ENV}
    assert used and used <= provided
    assert container["command"] == NODE_COMMAND and "sh" not in container["command"][0]


class RecordingTracker:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def log(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))


def test_failed_post_training_work_is_recorded_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 0's export failing after the final checkpoint must not fail the worker (torchrun would
    restart a finished gang); the agent learns of it through its status directory."""
    from types import SimpleNamespace

    from training import after_training

    def failing_export(ctx: object, task: object) -> None:
        raise OSError("upload refused")

    monkeypatch.setattr(after_training, "compress_after_training", failing_export)
    monkeypatch.setenv(agent.STATUS_DIR_ENV, str(tmp_path))
    tracker = RecordingTracker()
    after_training.post_training(SimpleNamespace(tracker=tracker), 9, SimpleNamespace())  # type: ignore[arg-type]
    assert tracker.events == [("post_training_failed", {"step": 9, "error": "OSError: upload refused"})]
    assert agent.post_training_failure(tmp_path) == "step 9: OSError: upload refused"
