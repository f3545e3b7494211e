"""Local jobs managed like cluster jobs: a detached supervisor records its agents under runs/<name>/, and
status, logs, list and cancel read them from any later command.

The agents here are small Python processes that behave like torchrun agents where it matters (a rank
log in DLAUNCH_LOG_DIR, exit 75 on SIGTERM, a chosen exit code), so these run in seconds; the real
2-agent DeepSpeed job is in test_local_jobs_e2e.py (slow).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from launcher.targets.base import Handle, Where
from launcher.targets.kubernetes.status import terminated_reason
from launcher.targets.local import LocalTarget
from launcher.targets.local.request import LocalRequest, Process
from launcher.targets.local.state import RunState, job_exit_code
from tests.conftest import REPO, base_spec

POST_TRAINING = ("training finished; post-training export/upload failed (see logs); resubmitting reruns only that "
                 "step")


def agent_script(rank: int, code: int = 0, sleep_s: float = 0.0) -> str:
    """Writes its rank log, sleeps, exits `code`; on SIGTERM exits 75 as a checkpointing worker does."""
    return textwrap.dedent(f"""
        import os, signal, sys, time
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(75))
        with open(os.path.join(os.environ["DLAUNCH_LOG_DIR"], "rank-{rank}.log"), "a") as log:
            log.write("rank {rank} says hello\\n")
        time.sleep({sleep_s})
        sys.exit({code})""")


def fake_request(runs: Path, agents: list[tuple[int, float]], name: str = "unit-job") -> LocalRequest:
    """A request whose agents are `agent_script`s with these (exit code, seconds)."""
    run_dir = (runs / name).resolve()
    job = {"name": name, "backend": "deepspeed", "nodes": len(agents), "procs_per_node": 1,
           "training": {"checkpoint": {"uri": str(runs.parent / "ckpt")}}}
    processes = [Process(f"agent-{i}", [sys.executable, "-c", agent_script(i, code, sleep_s)], f"agent-{i}.log")
                 for i, (code, sleep_s) in enumerate(agents)]
    return LocalRequest(name=name, backend="deepspeed", run_dir=str(run_dir), job_json=json.dumps(job),
                        processes=processes, env={"DLAUNCH_LOG_DIR": str(run_dir / "logs")}, grace_s=10,
                        max_steps=10)


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def target(runs: Path) -> LocalTarget:
    return LocalTarget(Where(str(runs)))


def launched(target: LocalTarget, runs: Path, agents: list[tuple[int, float]]) -> Handle:
    """A fake job `unit-job` launched under a real supervisor."""
    return target.launch(fake_request(runs, agents))


@pytest.mark.parametrize("codes, job_code", [
    ([0, 0], 0), ([80, 0], 80), ([75, 75], 75), ([75, -15], 75), ([78, 1], 78), ([80, 1], 1), ([1, 0], 1),
], ids=["ok", "post-training", "preempted", "preempted-killed", "config-error-wins", "80-and-crash", "crash"])
def test_the_job_exit_code_is_the_most_telling_agent_code(codes: list[int], job_code: int) -> None:
    assert job_exit_code(codes) == job_code


def test_exit_code_80_reads_the_same_on_kubernetes() -> None:
    assert terminated_reason({"exitCode": 80, "reason": "Error"}) == f"exit code 80: {POST_TRAINING}"


def test_an_agent_exiting_80_is_reported_in_status(target: LocalTarget, runs: Path, run_cli: Any) -> None:
    handle = launched(target, runs, [(80, 0.5), (0, 0.5)])
    outcome = target.wait(handle)
    assert (outcome.phase, outcome.code) == ("Failed", 80)
    result = run_cli("status", "unit-job", "--runs-dir", str(runs))
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == f"job unit-job (deepspeed, local {runs.resolve() / 'unit-job'}): Failed (exit code 80: " \
                       f"{POST_TRAINING})"
    assert lines[2] == f"checkpoints: no checkpoint yet ({runs.parent / 'ckpt' / 'unit-job' / 'checkpoints'})"
    assert [line.split()[0] + " " + " ".join(line.split()[2:]) for line in lines[4:]] == [
        f"agent-0 exited 80: {POST_TRAINING}", "agent-1 exited 0"]
    state = json.loads(run_cli("status", "unit-job", "--runs-dir", str(runs), "-o", "json").out)
    assert [(a["name"], a["exit_code"]) for a in state["agents"]] == [("agent-0", 80), ("agent-1", 0)]


def test_logs_of_a_rank_of_all_ranks_and_a_rank_out_of_range(target: LocalTarget, runs: Path, run_cli: Any) -> None:
    target.wait(launched(target, runs, [(0, 0), (0, 0)]))
    assert run_cli("logs", "unit-job", "--runs-dir", str(runs)).out.splitlines() == ["rank 0 says hello"]
    assert run_cli("logs", "unit-job", "--runs-dir", str(runs), "--rank", "1").out.splitlines() == [
        "rank 1 says hello"]
    assert run_cli("logs", "unit-job", "--runs-dir", str(runs), "--all").out.splitlines() == [
        "[rank 0] rank 0 says hello", "[rank 1] rank 1 says hello"]
    result = run_cli("logs", "unit-job", "--runs-dir", str(runs), "--rank", "5")
    assert (result.code, result.err) == (1, "error: job unit-job has ranks 0 to 1, not 5: pass --rank between them\n")


def test_logs_follow_ends_with_the_job(target: LocalTarget, runs: Path, run_cli: Any) -> None:
    launched(target, runs, [(0, 1.5)])
    result = run_cli("logs", "unit-job", "--runs-dir", str(runs), "--follow")
    assert (result.code, result.out) == (0, "rank 0 says hello\n")
    assert RunState.load(target.find("unit-job").detail.paths).exit_code == 0


def test_a_second_submit_of_a_running_job_is_refused_and_cancel_stops_it(target: LocalTarget, runs: Path,
                                                                         run_cli: Any, write_spec: Any) -> None:
    handle = launched(target, runs, [(0, 60), (0, 60)])
    result = run_cli("submit", str(write_spec(base_spec())), "--runs-dir", str(runs))
    assert result.code == 2
    assert result.err.startswith("error: job unit-job is already running on this machine (supervisor pid ")
    assert "dlaunch cancel unit-job" in result.err
    result = run_cli("cancel", "unit-job", "--runs-dir", str(runs))
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == ("job unit-job: stopped with exit code 75 (stopped after checkpointing "
                                          "(preempted or cancelled); resubmitting resumes)")
    assert result.out.splitlines()[1].startswith("checkpoints are kept: no checkpoint yet")
    state = RunState.load(handle.detail.paths)
    assert state is not None and state.cancelled and [a.exit_code for a in state.agents] == [75, 75]
    assert target.status(handle).phase == "Stopped"
    again = run_cli("cancel", "unit-job", "--runs-dir", str(runs))
    assert again.out.splitlines()[0] == "job unit-job is not running (Stopped): nothing to stop"


def test_list_shows_local_jobs_without_any_kubeconfig(target: LocalTarget, runs: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, run_cli: Any) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    target.wait(launched(target, runs, [(0, 0)]))
    result = run_cli("list", "--runs-dir", str(runs))
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[:2] == [f"local jobs in {runs}/:", "NAME      BACKEND    PHASE      PROGRESS              AGE"]
    assert lines[2].split()[:3] == ["unit-job", "deepspeed", "Succeeded"]
    records = json.loads(run_cli("list", "--runs-dir", str(runs), "-o", "json").out)
    assert [(r["name"], r["target"], r["phase"]) for r in records] == [("unit-job", "local", "Succeeded")]
    empty = run_cli("list", "--runs-dir", str(tmp_path / "none"))
    assert (empty.code, empty.out) == (0, f"no dlaunch jobs in {tmp_path / 'none'}/ (and no Kubernetes "
                                          "configuration here: no kubeconfig)\n")


def test_a_name_without_a_local_run_means_a_kubernetes_job(runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           run_cli: Any) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    result = run_cli("status", "nope", "--runs-dir", str(runs))
    assert result.code == 1
    assert result.err.startswith("error: no Kubernetes configuration")


def test_importing_the_registry_imports_neither_kubernetes_nor_torch() -> None:
    code = ("import sys; from launcher.targets.base import load_target, Where; load_target('local', Where()); "
            "heavy = [m for m in ('kubernetes', 'torch', 'deepspeed', 'ray') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_local_dry_run_is_what_launch_writes_and_spawns(runs: Path, write_spec: Any, run_cli: Any) -> None:
    """The request `--dry-run` prints is the one launch runs: job.json as written, each agent's command
    line as the kernel has it (/proc/<pid>/cmdline)."""
    from launcher.plan import plan_job
    from launcher.spec import load_spec
    from launcher.targets.base import SubmitOptions

    spec_data = base_spec()
    spec_data["resources"] = {"nodes": 2, "gpus_per_node": 1}
    spec = load_spec(str(write_spec(spec_data))).spec
    target = LocalTarget(Where(str(runs)))
    request = target.prepare(spec, plan_job(spec).layout, SubmitOptions(grace_s=5))
    printed = request.text()
    handle = target.launch(request)
    try:
        state = RunState.load(handle.detail.paths)
        assert state is not None
        spawned = [Path(f"/proc/{agent.pid}/cmdline").read_bytes().decode().split("\0")[:-1] for agent in state.agents]
    finally:
        target.cancel(handle)
    assert spawned == [p.argv for p in request.processes]
    job_json = handle.detail.paths.job_file.read_text()
    assert printed.startswith(f"# {handle.detail.paths.job_file}\n{job_json}")
    for argv in spawned:
        assert shlex.join(argv) in printed.splitlines()
    assert handle.detail.paths.request_file.read_text() == request.to_json()
    # The CLI prints the same: the job file byte for byte (the rendezvous port is chosen per request).
    cli = run_cli("submit", str(write_spec(spec_data)), "--dry-run", "--runs-dir", str(runs))
    assert cli.code == 0 and cli.out.startswith(f"# {handle.detail.paths.job_file}\n{job_json}")
