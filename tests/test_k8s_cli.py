"""`dlaunch status | logs | list | cancel` and `submit --wait/--follow` against the fake API server.

Pods, events and job conditions are written into the fake by `JobSim`, standing in for the Job
controller, the scheduler and the kubelet; dlaunch reads them through the official client.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.targets.kubernetes import logs as job_logs
from tests.fake_kube.cluster_sim import JobSim, terminated, unschedulable, waiting
from tests.fake_kube.fixtures import (  # noqa: F401 - fixtures
    CHECKPOINT_URI, NAMESPACE, buckets, fake_kube, in_background, k8s_spec, kubeconfig, rendered, submit,
)
from tests.fake_kube.server import FakeKubeApi
from tests.s3server import SeaweedS3, s3_server  # noqa: F401 - s3_server is a fixture

CHECKPOINTS = f"{CHECKPOINT_URI}/kjob/checkpoints"
GPU_SHORTAGE = ("0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: "
                "3 No preemption victims found for incoming pod.")


@dataclass
class Submitted:
    spec: dict[str, Any]
    path: Path
    sim: JobSim
    checkpoints: Path

    def commit_checkpoint(self, step: int) -> None:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        (self.checkpoints / "latest").write_text(f"step-{step}\n")


@pytest.fixture
def job(fake_kube: FakeKubeApi, kubeconfig: Path, buckets: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Submitted:
    """The 2-node spec `kjob`, written to cluster.yaml and submitted; followers poll fast."""
    monkeypatch.setattr(job_logs, "POLL_S", 0.02)
    spec = k8s_spec()
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    assert submit(spec) == 0
    return Submitted(spec, path, JobSim(fake_kube, NAMESPACE, "kjob"), buckets / CHECKPOINTS.removeprefix("s3://"))


def follow_requests(fake: FakeKubeApi) -> int:
    return sum(1 for r in fake.requests if r.path.endswith("/log") and r.query.get("follow") == "true")


# ----- status ---------------------------------------------------------------------------------------
def test_status_of_a_running_job(job: Submitted, run_cli: Any) -> None:
    job.sim.start()
    job.commit_checkpoint(75)
    result = run_cli("status", str(job.path))
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "job kjob (deepspeed, namespace dlaunch): Running (2/2 pods ready)",
        f"checkpoints: last committed step 75 ({CHECKPOINTS})",
        "INDEX  POD        PHASE    NODE    RESTARTS  REASON",
        "0      kjob-0-g0  Running  node-0  0",
        "1      kjob-1-g0  Running  node-1  0",
    ]


def test_status_names_why_pods_are_pending_in_one_line(job: Submitted, run_cli: Any) -> None:
    for index in range(2):
        job.sim.pod(index, phase="Pending", state=waiting("ContainerCreating"), node_name=None,
                    conditions=unschedulable(GPU_SHORTAGE))
    result = run_cli("status", str(job.path))
    assert result.out.splitlines()[0] == (
        "job kjob (deepspeed, namespace dlaunch): Pending (0/2 pods ready); pod 0: unschedulable: 0/3 nodes: "
        "insufficient nvidia.com/gpu (and 1 more pods)")
    assert result.out.splitlines()[1] == f"checkpoints: no checkpoint yet ({CHECKPOINTS})"


POD_PROBLEMS = {
    "image-pull": (
        {"phase": "Pending", "state": waiting("ErrImagePull", 'failed to pull and unpack image '
                                                             '"docker.io/library/dlaunch:dev": not found')},
        [], 'image pull failed (ErrImagePull): failed to pull and unpack image "docker.io/library/dlaunch:dev": '
            'not found'),
    "failed-mount": (
        {"phase": "Pending", "state": waiting("ContainerCreating")},
        [("FailedMount", 'MountVolume.SetUp failed for volume "job-config" : configmap "kjob-config" not found')],
        'failed mount: MountVolume.SetUp failed for volume "job-config" : configmap "kjob-config" not found'),
    "oom-killed-and-restarted": (
        {"restarts": 1, "last_state": terminated(137, "OOMKilled")}, [],
        "restarted after OOMKilled (exit code 137): the container needs more memory than resources.memory"),
    "crash-loop": (
        {"state": waiting("CrashLoopBackOff", "back-off 40s restarting failed container"), "restarts": 3,
         "last_state": terminated(1)}, [], "CrashLoopBackOff: Error (exit code 1)"),
    "configuration-error": (
        {"phase": "Failed", "state": terminated(78)}, [], "exit code 78: configuration error (see dlaunch logs)"),
    "secret-not-found": (
        {"phase": "Pending", "state": waiting("CreateContainerConfigError", 'secret "s3-creds" not found')}, [],
        'CreateContainerConfigError: secret "s3-creds" not found'),
    "unschedulable-for-several-reasons": (
        {"phase": "Pending", "state": waiting("ContainerCreating"), "node_name": None,
         "conditions": unschedulable("0/3 nodes are available: 1 node(s) had untolerated taint "
                                     "{node-role.kubernetes.io/control-plane: }, 2 Insufficient memory.")}, [],
        "unschedulable: 0/3 nodes: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
        "2 insufficient memory"),
}


@pytest.mark.parametrize("pod, events, reason", list(POD_PROBLEMS.values()), ids=list(POD_PROBLEMS))
def test_status_reads_the_reason_from_states_conditions_and_events(pod: dict[str, Any], events: list[tuple[str, str]],
                                                                   reason: str, job: Submitted, run_cli: Any) -> None:
    job.sim.pod(0, **pod)
    for event_reason, message in events:
        job.sim.event(0, event_reason, message)
    result = run_cli("status", str(job.path), "-o", "json")
    assert json.loads(result.out)["pods"][0]["reason"] == reason


def test_status_json_and_pod_replacements_counted_as_restarts(job: Submitted, run_cli: Any) -> None:
    job.sim.start()
    job.sim.pod(1, phase="Failed", state=terminated(1))
    job.sim.pod(1, replace=True, node_name="node-2")
    status = json.loads(run_cli("status", str(job.path), "-o", "json").out)
    assert status == {
        "name": "kjob", "namespace": "dlaunch", "backend": "deepspeed", "phase": "Running",
        "reason": "2/2 pods ready", "problem": "", "spec_hash": rendered(job.spec)[0].spec_hash(),
        "checkpoint": {"step": None, "location": CHECKPOINTS, "detail": "no checkpoint yet"},
        "pods": [{"index": 0, "role": "node", "name": "kjob-0-g0", "phase": "Running", "node": "node-0",
                  "restarts": 0, "reason": ""},
                 {"index": 1, "role": "node", "name": "kjob-1-g1", "phase": "Running", "node": "node-2",
                  "restarts": 1, "reason": ""}],
    }


def test_status_of_a_failed_job(job: Submitted, run_cli: Any) -> None:
    job.sim.start()
    job.sim.fail(0, 1)
    assert run_cli("status", str(job.path)).out.splitlines()[0] == (
        "job kjob (deepspeed, namespace dlaunch): Failed (MaxFailedIndexesExceeded: Job has exceeded the "
        "specified maximal number of failed indexes)")


def test_status_by_name_in_the_contexts_namespace(job: Submitted, run_cli: Any) -> None:
    result = run_cli("status", "--name", "kjob", "--context", "team")
    assert result.code == 0, result.err
    assert result.out.startswith("job kjob (deepspeed, namespace dlaunch): Pending")


def test_status_of_a_ray_job_ranks_head_then_workers(fake_kube: FakeKubeApi, kubeconfig: Path, run_cli: Any) -> None:
    spec = k8s_spec(backend="ray")
    submit(spec)
    rayjob = fake_kube.get("ray.io/v1", "RayJob", "kjob", NAMESPACE)
    assert rayjob is not None
    rayjob["status"] = {"jobStatus": "RUNNING", "jobDeploymentStatus": "Running"}
    fake_kube.add(rayjob)
    for name, node_type in (("kjob-head-x", "head"), ("kjob-workers-b", "worker"), ("kjob-workers-a", "worker"),
                            ("kjob-submitter", None)):
        labels = {"dlaunch.dev/job": "kjob", **({"ray.io/node-type": node_type} if node_type else {})}
        fake_kube.add({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE,
                                                                      "labels": labels},
                       "spec": {"containers": [{"name": "ray", "image": "dlaunch:dev"}], "nodeName": "node-1"},
                       "status": {"phase": "Running"}})
    result = run_cli("status", "--name", "kjob", "-n", NAMESPACE)
    assert result.out.splitlines()[0] == "job kjob (ray, namespace dlaunch): Running"
    assert [line.split()[:2] for line in result.out.splitlines()[3:]] == [
        ["0", "kjob-head-x"], ["1", "kjob-workers-a"], ["2", "kjob-workers-b"], ["-", "kjob-submitter"]]


@pytest.mark.parametrize("args, code, message", [
    (["--name", "nope", "-n", NAMESPACE], 1, "error: no job named 'nope' in namespace 'dlaunch': check the name, "
                                             "--namespace and --context (`dlaunch list` shows your jobs)"),
    ([], 2, "Error: name the job: give its NAME or SPEC file, or --name NAME (one of them)"),
], ids=["job-not-found", "no-job-named"])
def test_status_errors(args: list[str], code: int, message: str, job: Submitted, run_cli: Any) -> None:
    result = run_cli("status", *args)
    assert result.code == code
    assert message in result.err.splitlines()


# ----- logs ---------------------------------------------------------------------------------------
def test_logs_of_rank_0_by_default_and_of_any_rank(job: Submitted, run_cli: Any) -> None:
    job.sim.start()
    job.sim.log(0, "rank 0 says hello", "step 1 loss 3.21")
    job.sim.log(1, "rank 1 says hello")
    assert run_cli("logs", str(job.path)).out.splitlines() == ["rank 0 says hello", "step 1 loss 3.21"]
    assert run_cli("logs", str(job.path), "--index", "1").out.splitlines() == ["rank 1 says hello"]
    assert run_cli("logs", str(job.path), "--rank", "1").out.splitlines() == ["rank 1 says hello"]  # the old name


def test_logs_of_all_ranks_are_interleaved_in_time_order(job: Submitted, run_cli: Any) -> None:
    job.sim.start()
    job.sim.log(0, "a0")
    job.sim.log(1, "b0")
    job.sim.log(0, "a1")
    job.sim.log(1, "b1")
    assert run_cli("logs", str(job.path), "--all").out.splitlines() == [
        "[pod 0] a0", "[pod 1] b0", "[pod 0] a1", "[pod 1] b1"]


@pytest.mark.parametrize("args, message", [
    (["--index", "5"], "error: job kjob has pods 0 to 1, not 5: pass --index between them"),
    ([], "error: pod 0 of job kjob has no logs yet: pod kjob-0-g0 is Pending: unschedulable: 0/3 nodes: "
         "insufficient nvidia.com/gpu; `dlaunch logs --follow` waits for it"),
    (["--index", "1", "--all"], "Error: --index and --all exclude each other"),
], ids=["index-out-of-range", "pod-not-started", "index-and-all"])
def test_logs_errors(args: list[str], message: str, job: Submitted, run_cli: Any) -> None:
    job.sim.pod(0, phase="Pending", state=waiting("ContainerCreating"), node_name=None,
                conditions=unschedulable(GPU_SHORTAGE))
    result = run_cli("logs", str(job.path), *args)
    assert result.code != 0
    assert message in result.err.splitlines()


def play_restarts_and_replacement(fake: FakeKubeApi, sim: JobSim) -> None:
    """Rank 0 logs, its stream drops, its container restarts, then its pod is replaced; the job succeeds."""
    fake.wait_for(lambda: follow_requests(fake) >= 1)
    sim.log(0, "two")
    fake.drop_streams()
    fake.wait_for(lambda: follow_requests(fake) >= 2)
    sim.log(0, "three")
    sim.pod(0, node_name="node-0", restarts=1, last_state=terminated(1))
    sim.log(0, "four (after a container restart)")
    fake.wait_for(lambda: follow_requests(fake) >= 3)
    sim.pod(0, phase="Failed", state=terminated(1), restarts=1)
    sim.pod(0, replace=True, node_name="node-2")
    sim.log(0, "five (in a replacement pod)")
    fake.wait_for(lambda: follow_requests(fake) >= 4)
    sim.finish(succeeded=True)


def test_logs_follow_survives_drops_restarts_and_replacements(job: Submitted, fake_kube: FakeKubeApi,
                                                              run_cli: Any) -> None:
    job.sim.start()
    job.sim.log(0, "one")
    with in_background(lambda: play_restarts_and_replacement(fake_kube, job.sim)):
        result = run_cli("logs", str(job.path), "--follow")
    assert result.code == 0, result.err
    assert result.out.splitlines() == ["one", "two", "three", "four (after a container restart)",
                                       "five (in a replacement pod)"]


def test_logs_all_follow_prefixes_every_rank(job: Submitted, fake_kube: FakeKubeApi, run_cli: Any) -> None:
    job.sim.start()

    def play() -> None:
        fake_kube.wait_for(lambda: follow_requests(fake_kube) >= 2)
        for step in range(3):
            job.sim.log(0, f"step {step}")
            job.sim.log(1, f"step {step}")
        job.sim.finish(succeeded=True)
    with in_background(play):
        result = run_cli("logs", str(job.path), "--all", "--follow")
    lines = result.out.splitlines()
    assert [line for line in lines if line.startswith("[pod 0]")] == [f"[pod 0] step {i}" for i in range(3)]
    assert [line for line in lines if line.startswith("[pod 1]")] == [f"[pod 1] step {i}" for i in range(3)]
    assert len(lines) == 6


# ----- list ---------------------------------------------------------------------------------------
def test_list_shows_this_users_jobs(job: Submitted, fake_kube: FakeKubeApi, run_cli: Any, tmp_path: Path) -> None:
    no_local_runs = ("--runs-dir", str(tmp_path / "runs"))  # not ./runs/, where `make demo` leaves one
    _, objects = rendered(k8s_spec(name="bobs-job"))
    bobs = objects[-1]
    bobs["metadata"]["labels"]["dlaunch.dev/user"] = "bob"
    bobs["metadata"]["annotations"]["dlaunch.dev/submitted-by"] = "bob"
    fake_kube.add(bobs)
    table = run_cli("list", "-n", NAMESPACE, *no_local_runs).out.splitlines()
    assert table[0] == "NAME  BACKEND    PHASE    NODES  AGE  SUBMITTED BY"
    assert re.fullmatch(r"kjob  deepspeed  Pending  2      \d+s +alice@example\.com", table[1])
    assert len(table) == 2
    everyone = json.loads(run_cli("list", "--context", "team", "--all-users", "-o", "json", *no_local_runs).out)
    assert [(j["name"], j["submitted_by"], j["namespace"], j["phase"], j["nodes"]) for j in everyone] == [
        ("bobs-job", "bob", "dlaunch", "Pending", 2), ("kjob", "alice@example.com", "dlaunch", "Pending", 2)]


def test_list_in_a_namespace_without_jobs(fake_kube: FakeKubeApi, kubeconfig: Path, run_cli: Any,
                                          tmp_path: Path) -> None:
    result = run_cli("list", "--runs-dir", str(tmp_path / "runs"))
    assert (result.code, result.out) == (0, "no dlaunch jobs in namespace default\n")


# ----- cancel -------------------------------------------------------------------------------------
@pytest.mark.parametrize("by_name", [False, True], ids=["by-spec", "by-name"])
def test_cancel_deletes_foreground_and_keeps_checkpoints(by_name: bool, job: Submitted, fake_kube: FakeKubeApi,
                                                         run_cli: Any) -> None:
    job.sim.start()
    job.commit_checkpoint(75)
    fake_kube.reset_requests()
    args = ["--name", "kjob", "-n", NAMESPACE] if by_name else [str(job.path)]
    result = run_cli("cancel", *args)
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "job kjob: deleting (foreground: pods stop first, each within its grace period) job.batch/kjob, "
        "service/kjob, configmap/kjob-config, networkpolicy.networking.k8s.io/kjob in namespace dlaunch",
        f"checkpoints are kept: last committed step 75 ({CHECKPOINTS}); submit the same spec again to resume "
        "from the latest",
    ]
    assert {r.query["propagationPolicy"] for r in fake_kube.requests if r.method == "DELETE"} == {"Foreground"}
    assert fake_kube.objects("v1", "Pod", NAMESPACE) == []
    assert job.checkpoints.joinpath("latest").exists()


def test_cancel_of_a_missing_job(fake_kube: FakeKubeApi, kubeconfig: Path, run_cli: Any) -> None:
    result = run_cli("cancel", "--name", "kjob", "-n", NAMESPACE)
    assert result.code == 1
    assert result.err.splitlines() == ["error: no job named 'kjob' in namespace 'dlaunch': check the name, "
                                       "--namespace and --context (`dlaunch list` shows your jobs)"]


# ----- submit --wait / --follow -----------------------------------------------------------------------
def play_to_the_end(fake: FakeKubeApi, succeeded: bool) -> None:
    sim = JobSim(fake, NAMESPACE, "kjob")
    fake.wait_for(lambda: any(r.watch for r in fake.requests) and fake.get("batch/v1", "Job", "kjob", NAMESPACE))
    sim.start()
    sim.log(0, "training...")
    sim.finish(succeeded=succeeded)


@pytest.mark.parametrize("succeeded, code", [(True, 0), (False, 1)], ids=["succeeded", "failed"])
def test_submit_wait_exits_with_the_jobs_outcome(succeeded: bool, code: int, fake_kube: FakeKubeApi,
                                                 kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with in_background(lambda: play_to_the_end(fake_kube, succeeded)):
        assert submit(k8s_spec(), wait=True) == code
    captured = capsys.readouterr()
    assert captured.err.splitlines()[:2] == ["job kjob: Pending (0/2 pods ready)", "job kjob: Running (2/2 pods ready)"]
    if succeeded:
        assert captured.out.splitlines()[-1] == "job kjob succeeded"
    else:
        assert captured.err.splitlines()[-1] == (
            "job kjob failed: BackoffLimitExceeded: Job has reached the specified backoff limit; see `dlaunch logs "
            "--name kjob -n dlaunch --all` and `dlaunch status --name kjob -n dlaunch`")


def test_submit_follow_streams_rank_0_until_the_end(fake_kube: FakeKubeApi, kubeconfig: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(job_logs, "POLL_S", 0.02)
    with in_background(lambda: play_to_the_end(fake_kube, succeeded=True)):
        assert submit(k8s_spec(), follow=True) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == ["training...", "job kjob succeeded"]


def test_an_unreachable_cluster_is_an_error_not_a_traceback(fake_kube: FakeKubeApi, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, run_cli: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        server = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("KUBECONFIG", str(fake_kube.write_kubeconfig(tmp_path / "kubeconfig", server=server)))
    result = run_cli("status", "--name", "kjob")
    assert result.code == 1
    assert result.err.splitlines() == [
        "error: Failed to read Job: default/kjob: connection failed: connection refused. check that the cluster is "
        "reachable from here (kubectl cluster-info) and that --context names it"]


def test_status_asks_for_events_only_when_a_pod_is_being_set_up(job: Submitted, fake_kube: FakeKubeApi,
                                                                run_cli: Any) -> None:
    job.sim.start()
    fake_kube.reset_requests()
    run_cli("status", str(job.path))
    assert fake_kube.count("GET", "/events$") == 0
    job.sim.pod(1, phase="Pending", state=waiting("ContainerCreating"))
    run_cli("status", str(job.path))
    assert fake_kube.count("GET", "/events$") == 1


@pytest.mark.slow
def test_status_reads_the_last_checkpoint_from_s3(fake_kube: FakeKubeApi, kubeconfig: Path, s3_server: SeaweedS3,
                                                  monkeypatch: pytest.MonkeyPatch, run_cli: Any) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = s3_server.create_bucket()
    spec = k8s_spec()
    spec["training"]["checkpoint"] = {"uri": f"s3://{bucket}/runs", "endpoint_url": s3_server.endpoint_url}
    submit(spec)
    result = run_cli("status", "--name", "kjob", "-n", NAMESPACE)
    assert result.out.splitlines()[1] == f"checkpoints: no checkpoint yet (s3://{bucket}/runs/kjob/checkpoints)"
    s3_server.client().put_object(Bucket=bucket, Key="runs/kjob/checkpoints/latest", Body=b"step-40\n")
    result = run_cli("status", "--name", "kjob", "-n", NAMESPACE)
    assert result.out.splitlines()[1] == f"checkpoints: last committed step 40 (s3://{bucket}/runs/kjob/checkpoints)"


def test_submit_says_what_it_applied_and_what_next(fake_kube: FakeKubeApi, kubeconfig: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert submit(k8s_spec()) == 0
    assert capsys.readouterr().out.splitlines() == [
        "job kjob submitted to namespace dlaunch (context fake): applied configmap/kjob-config, "
        "networkpolicy.networking.k8s.io/kjob, service/kjob, job.batch/kjob",
        f"checkpoints: no checkpoint yet ({CHECKPOINTS})",
        "next: dlaunch status --name kjob -n dlaunch  |  dlaunch logs --name kjob -n dlaunch --follow  |  "
        "dlaunch cancel --name kjob -n dlaunch",
    ]


RUNNING_POD = {"metadata": {"name": "kjob-0-g0", "uid": "u0"},
               "status": {"containerStatuses": [{"name": "worker", "state": {"running": {}}, "restartCount": 0}]}}


class EndingStreams:
    """A client whose every follow stream ends at once, with nothing, while the pod keeps running
    (an API server going away on kept-alive connections looks like this)."""

    def __init__(self) -> None:
        self.streams = 0

    def pod_log(self, pod: str, follow: bool, previous: bool = False, timestamps: bool = True) -> list[str]:
        self.streams += 1
        return []


def test_a_follower_stops_when_told_and_does_not_spin_on_streams_that_end_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`submit --follow` sets `stop` when the job ends; the follower used to reconnect in a busy loop
    without looking at it as long as the pod looked running (it kept a core busy for the rest of a
    test session)."""
    import threading
    import time

    monkeypatch.setattr(job_logs, "POLL_S", 0.01)
    monkeypatch.setattr(job_logs, "source_pods", lambda client, job, source: [RUNNING_POD])
    client, stop = EndingStreams(), threading.Event()
    follower = job_logs.SourceFollower(client, "kjob", 0, lambda line: None, stop.is_set)  # type: ignore[arg-type]
    thread = threading.Thread(target=follower.run, daemon=True)
    thread.start()
    time.sleep(0.3)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive(), "the follower ignored stop while its pod was running"
    assert 3 <= client.streams <= 0.3 / 0.01 + 5  # one reconnect per POLL_S, not thousands


def test_logs_follow_catches_up_when_the_stream_drops_as_the_run_ends(job: Submitted, fake_kube: FakeKubeApi,
                                                                      run_cli: Any) -> None:
    job.sim.start()
    job.sim.log(0, "first words")

    def play() -> None:
        fake_kube.wait_for(lambda: follow_requests(fake_kube) >= 1)
        with fake_kube.streams_cut():  # the stream breaks before these lines reach it
            job.sim.log(0, "last words")
            job.sim.pod(0, node_name="node-0", restarts=1, last_state=terminated(1))
        job.sim.log(0, "after the restart")
        fake_kube.wait_for(lambda: follow_requests(fake_kube) >= 2)
        job.sim.finish(succeeded=True)
    with in_background(play):
        result = run_cli("logs", str(job.path), "--follow")
    assert result.out.splitlines() == ["first words", "last words", "after the restart"]
    assert any(r.query.get("previous") == "true" for r in fake_kube.requests)
