"""The cluster backend against the fake API server: configuration, apply, resubmission, retries, watches.

The official `kubernetes` client is used unmodified, over real HTTP (tests/fake_kube).
"""

from __future__ import annotations

import importlib.util
import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from launcher.errors import SubmitError
from launcher.cli.submit import submit_to_cluster
from launcher.targets.kubernetes import kubeconfig as kube_config
from launcher.targets.kubernetes.backend import KubernetesBackend, user_label_value
from launcher.targets.kubernetes.client import JOB, ClusterError, KubeRequestError, RetryPolicy
from launcher.targets.kubernetes.target import with_namespace
from launcher.targets.kubernetes.render import plan_for_render, render
from launcher.targets.kubernetes.status import JobState
from tests.fake_kube.cluster_sim import JobSim
from tests.fake_kube.fixtures import (  # noqa: F401 - fixtures
    CHECKPOINT_URI, NAMESPACE, buckets, fake_kube, k8s_spec, kubeconfig, rendered, submit,
)
from tests.conftest import REPO
from tests.fake_kube.server import FakeKubeApi

FAST = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.05)
JOB_PATH = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"


@pytest.fixture
def backend(kubeconfig: Path) -> KubernetesBackend:
    return KubernetesBackend.connect(None, NAMESPACE, FAST)


def watches(fake: FakeKubeApi) -> list[dict[str, str]]:
    return [r.query for r in fake.requests if r.watch]


def in_thread(target: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run `target()` in a thread; the dict gets its "result" or "error"."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = target()
        except SubmitError as exc:
            outcome["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


# ----- configuration --------------------------------------------------------------------------------
def test_namespace_comes_from_the_chosen_kubeconfig_context(kubeconfig: Path) -> None:
    assert KubernetesBackend.connect("team", None).namespace == NAMESPACE
    assert KubernetesBackend.connect("fake", None).namespace == "default"
    assert KubernetesBackend.connect("team", "other").namespace == "other"


def test_unknown_context_names_the_contexts_there(kubeconfig: Path) -> None:
    with pytest.raises(ClusterError) as caught:
        KubernetesBackend.connect("prod", None)
    assert str(caught.value) == (f"context 'prod' is not in kubeconfig {kubeconfig} (it has: fake, team): pass "
                                 "--context with one of those, or set kubernetes.context in the spec")


def test_no_kubeconfig_outside_a_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ClusterError) as caught:
        KubernetesBackend.connect(None, None)
    assert str(caught.value) == (
        "no Kubernetes configuration: no kubeconfig at ~/.kube/config or $KUBECONFIG, and not running in a pod: "
        "point KUBECONFIG at your cluster's kubeconfig (for kind: kind export kubeconfig)")


@pytest.fixture
def in_a_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No kubeconfig; the service account files a pod has, at paths under tmp_path."""
    from kubernetes.config import incluster_config

    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    for name, content in (("token", "service-account-token"), ("ca.crt", "not checked before a request"),
                          ("namespace", "team-a\n")):
        (tmp_path / name).write_text(content)
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    monkeypatch.setattr(kube_config, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "namespace")


def test_in_a_pod_the_service_account_and_its_namespace_are_used(in_a_pod: None) -> None:
    backend = KubernetesBackend.connect(None, None)
    assert (backend.client.server, backend.namespace, backend.client.cluster.context) == (
        "https://10.96.0.1:443", "team-a", None)
    with pytest.raises(ClusterError) as caught:
        KubernetesBackend.connect("prod", None)
    assert str(caught.value) == ("--context prod needs a kubeconfig, but there is none here: this is a pod using its "
                                 "service account; drop --context")


# ----- apply --------------------------------------------------------------------------------------
def test_submit_applies_each_object_server_side_as_dlaunch(fake_kube: FakeKubeApi, kubeconfig: Path) -> None:
    assert submit(k8s_spec()) == 0
    patches = [r for r in fake_kube.requests if r.method == "PATCH"]
    config_map, policy, service = (f"/api/v1/namespaces/{NAMESPACE}/configmaps/kjob-config",
                                   f"/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/networkpolicies/kjob",
                                   f"/api/v1/namespaces/{NAMESPACE}/services/kjob")
    # the objects, then the others again, now owned by the Job (whose uid they need)
    assert [r.path for r in patches] == [config_map, policy, service, f"{JOB_PATH}/kjob", config_map, policy, service]
    assert all(r.query == {"fieldManager": "dlaunch", "force": "true"} for r in patches)
    job = fake_kube.get("batch/v1", "Job", "kjob", NAMESPACE)
    assert job is not None
    assert job["metadata"]["managedFields"][0]["manager"] == "dlaunch"
    assert job["metadata"]["labels"]["dlaunch.dev/user"] == "alice-example.com"
    assert job["metadata"]["annotations"]["dlaunch.dev/submitted-by"] == "alice@example.com"
    assert job["metadata"]["annotations"]["dlaunch.dev/spec-hash"] == rendered(k8s_spec())[0].spec_hash()


def test_dry_run_server_sends_everything_and_persists_nothing(fake_kube: FakeKubeApi, kubeconfig: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert submit(k8s_spec(), dry_run_server=True) == 0
    assert [r.query.get("dryRun") for r in fake_kube.requests if r.method == "PATCH"] == ["All"] * 4
    assert fake_kube.objects("batch/v1", "Job", NAMESPACE) == []
    assert capsys.readouterr().out.splitlines() == [
        "configmap/kjob-config serverside-applied (server dry run)",
        "networkpolicy.networking.k8s.io/kjob serverside-applied (server dry run)",
        "service/kjob serverside-applied (server dry run)",
        "job.batch/kjob serverside-applied (server dry run)",
    ]


@pytest.mark.parametrize("user, label", [("alice@example.com", "alice-example.com"),
                                          ("system:serviceaccount:ml:trainer", "system-serviceaccount-ml-trainer"),
                                          ("@@@", "unknown")], ids=["email", "service-account", "no-valid-chars"])
def test_user_names_become_valid_label_values(user: str, label: str) -> None:
    assert user_label_value(user) == label


@pytest.mark.parametrize("status, message, step", [
    (403, 'jobs.batch "kjob" is forbidden: User "alice@example.com" cannot patch resource "jobs"',
     "ask a cluster admin for the dlaunch user role in this namespace (see k8s/README.md)"),
    (404, 'namespaces "dlaunch" not found', "check the namespace and the job name (`dlaunch list` shows your jobs)"),
    (409, 'Apply failed with 1 conflict: conflict with "kubectl": .spec.parallelism',
     "another object has this name: `dlaunch cancel` it or choose another job name"),
    (422, 'Job.batch "kjob" is invalid: spec.parallelism: Invalid value: -1',
     "the API server rejected the object: fix what the message names (`dlaunch render` shows the objects)"),
], ids=["forbidden", "not-found", "conflict", "invalid"])
def test_api_errors_name_the_object_and_the_next_step(status: int, message: str, step: str, fake_kube: FakeKubeApi,
                                                      kubeconfig: Path) -> None:
    fake_kube.fail(status, method="PATCH", path="/jobs/kjob$", message=message)
    with pytest.raises(SubmitError) as caught:
        submit(k8s_spec())
    assert str(caught.value) == f"Failed to create Job: dlaunch/kjob: {status} {message}. {step}"
    assert isinstance(caught.value.__cause__, ApiException)


# ----- resubmission -------------------------------------------------------------------------------
def test_resubmitting_an_unchanged_spec_is_a_no_op(fake_kube: FakeKubeApi, kubeconfig: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    submit(k8s_spec())
    before = fake_kube.get("batch/v1", "Job", "kjob", NAMESPACE)
    fake_kube.reset_requests()
    capsys.readouterr()
    assert submit(k8s_spec()) == 0
    assert fake_kube.count("PATCH") == 0 and fake_kube.count("DELETE") == 0
    assert fake_kube.get("batch/v1", "Job", "kjob", NAMESPACE) == before
    assert capsys.readouterr().out.splitlines()[0] == (
        "job kjob is unchanged and already Pending in namespace dlaunch: nothing to do "
        "(pass --replace to start it again)")


def test_a_changed_spec_over_a_running_job_is_refused(fake_kube: FakeKubeApi, kubeconfig: Path) -> None:
    submit(k8s_spec())
    JobSim(fake_kube, NAMESPACE, "kjob").start()
    changed = k8s_spec(training={**k8s_spec()["training"], "max_steps": 20})
    with pytest.raises(ClusterError) as caught:
        submit(changed)
    old, new = rendered(k8s_spec())[0].spec_hash(), rendered(changed)[0].spec_hash()
    assert str(caught.value) == (
        f"job kjob is Running in namespace dlaunch with a different spec (spec hash {old}, yours {new}): pass "
        "--replace to delete it and start again from its latest checkpoint, or wait for it to finish")
    assert fake_kube.count("DELETE") == 0


def test_replace_deletes_the_running_job_then_creates_the_new_one(fake_kube: FakeKubeApi, kubeconfig: Path) -> None:
    submit(k8s_spec())
    sim = JobSim(fake_kube, NAMESPACE, "kjob")
    sim.start()
    old_uid = sim.job()["metadata"]["uid"]
    changed = k8s_spec(training={**k8s_spec()["training"], "max_steps": 20})
    assert submit(changed, replace=True) == 0
    deletes = [r for r in fake_kube.requests if r.method == "DELETE"]
    assert [(r.path, r.query["propagationPolicy"]) for r in deletes] == [(f"{JOB_PATH}/kjob", "Foreground")]
    job = sim.job()
    assert job["metadata"]["uid"] != old_uid
    assert job["metadata"]["annotations"]["dlaunch.dev/spec-hash"] == rendered(changed)[0].spec_hash()
    assert fake_kube.objects("v1", "Pod", NAMESPACE) == []  # the old pods went with the old job


def test_a_failed_job_resubmitted_resumes_from_its_latest_checkpoint(fake_kube: FakeKubeApi, kubeconfig: Path,
                                                                     buckets: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    spec = k8s_spec()
    checkpoints = buckets / CHECKPOINT_URI.removeprefix("s3://") / "kjob" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "latest").write_text("step-75\n")
    submit(spec)
    sim = JobSim(fake_kube, NAMESPACE, "kjob")
    sim.start()
    sim.fail(0, 1)
    capsys.readouterr()
    assert submit(spec) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("replaced the previous run of job kjob: the new run resumes from its latest checkpoint, if it "
                      "has one")
    assert out[2] == f"checkpoints: last committed step 75 ({CHECKPOINT_URI}/kjob/checkpoints); the job resumes from it"
    assert "status" not in sim.job()


def test_a_changed_node_count_replaces_the_job_and_resumes_on_the_new_world_size(
        fake_kube: FakeKubeApi, kubeconfig: Path, buckets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`resources.nodes` 2 -> 4 under a running job that has committed step 75: refused without
    --replace; with it, the Job is recreated for 4 indexes and torchrun's
    `--nnodes=4`, and its ConfigMap's resolved job keeps the checkpoint root and the global batch 64,
    re-planned as 4 ranks x micro 4 x accumulation 4 (2 x 4 x 8 before). That is what the workers need
    to resume step 75 on the new world size: they convert it through DeepSpeed's universal
    checkpoint, which tests/test_resume_world_size.py runs with real processes. Not verified here:
    pods of a real cluster doing so."""
    checkpoints = buckets / CHECKPOINT_URI.removeprefix("s3://") / "kjob" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "latest").write_text("step-75\n")
    submit(k8s_spec())
    sim = JobSim(fake_kube, NAMESPACE, "kjob")
    sim.start()
    wider = k8s_spec(resources={**k8s_spec()["resources"], "nodes": 4})
    with pytest.raises(ClusterError, match="pass --replace to delete it and start again from its latest checkpoint"):
        submit(wider)
    capsys.readouterr()
    assert submit(wider, replace=True) == 0
    out = capsys.readouterr().out.splitlines()
    resumes = f"checkpoints: last committed step 75 ({CHECKPOINT_URI}/kjob/checkpoints); the job resumes from it"
    assert resumes in out
    job = sim.job()
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (4, 4)
    assert "--nnodes=4" in job["spec"]["template"]["spec"]["containers"][0]["args"]
    resolved = json.loads(fake_kube.get("v1", "ConfigMap", "kjob-config", NAMESPACE)["data"]["job.json"])
    layout = resolved["layout"]
    assert (layout["data_parallel"], layout["micro"], layout["grad_accum"]) == (4, 4, 4)
    assert resolved["training"]["batch"]["global"] == 64
    assert resolved["training"]["checkpoint"]["uri"] == CHECKPOINT_URI


# ----- retries ------------------------------------------------------------------------------------
@pytest.mark.parametrize("inject", [
    lambda fake: fake.fail(429, path="/jobs/kjob$", times=2, retry_after=0),
    lambda fake: fake.fail(500, path="/jobs/kjob$", times=2),
    lambda fake: fake.fail(503, path="/jobs/kjob$", times=2),
    lambda fake: fake.drop(path="/jobs/kjob$", times=2),
], ids=["429-retry-after", "500", "503", "connection-dropped"])
def test_transient_failures_are_retried(inject: Any, fake_kube: FakeKubeApi, backend: KubernetesBackend) -> None:
    inject(fake_kube)
    assert backend.client.read(JOB, "kjob") is None
    assert fake_kube.count("GET", "/jobs/kjob$") == 3


def test_retries_are_bounded(fake_kube: FakeKubeApi, backend: KubernetesBackend) -> None:
    fake_kube.fail(500, path="/jobs/kjob$", times=10)
    with pytest.raises(KubeRequestError) as caught:
        backend.client.read(JOB, "kjob")
    assert str(caught.value) == ("Failed to read Job: dlaunch/kjob: 500 injected fault: 500. the API server is "
                                 "failing: try again shortly, or ask the cluster admin")
    assert fake_kube.count("GET", "/jobs/kjob$") == FAST.attempts


@pytest.mark.parametrize("status", [403, 409, 422], ids=["forbidden", "conflict", "invalid"])
def test_client_errors_are_not_retried(status: int, fake_kube: FakeKubeApi, backend: KubernetesBackend) -> None:
    fake_kube.fail(status, path="/jobs/kjob$")
    with pytest.raises(KubeRequestError) as caught:
        backend.client.read(JOB, "kjob")
    assert caught.value.status == status
    assert fake_kube.count("GET", "/jobs/kjob$") == 1


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=3, base_delay_s=1.0, max_delay_s=8.0)
    assert policy.delay(0, "3") == 3.0
    assert policy.delay(0, "120") == 8.0
    assert 0.5 <= policy.delay(0, None) <= 1.0
    assert policy.delay(10, None) <= 8.0


# ----- watches ------------------------------------------------------------------------------------
def test_wait_reconnects_from_the_last_resource_version(fake_kube: FakeKubeApi, kubeconfig: Path,
                                                        backend: KubernetesBackend) -> None:
    submit(k8s_spec())
    sim = JobSim(fake_kube, NAMESPACE, "kjob")
    seen: list[JobState] = []
    thread, outcome = in_thread(lambda: backend.wait_for_job_status("kjob", JOB, on_change=seen.append))
    fake_kube.wait_for(lambda: watches(fake_kube))
    sim.start()
    fake_kube.wait_for(lambda: len(seen) == 2)
    running_rv = sim.job()["metadata"]["resourceVersion"]
    fake_kube.drop_streams()
    fake_kube.wait_for(lambda: len(watches(fake_kube)) == 2)
    sim.finish(succeeded=True)
    thread.join(10)
    assert outcome["result"] == JobState("Succeeded")
    assert [s.phase for s in seen] == ["Pending", "Running", "Succeeded"]
    assert watches(fake_kube)[1]["resourceVersion"] == running_rv
    assert watches(fake_kube)[1]["fieldSelector"] == "metadata.name=kjob"


def test_wait_relists_after_410_gone(fake_kube: FakeKubeApi, kubeconfig: Path, backend: KubernetesBackend) -> None:
    submit(k8s_spec())
    sim = JobSim(fake_kube, NAMESPACE, "kjob")
    thread, outcome = in_thread(lambda: backend.wait_for_job_status("kjob", JOB))
    fake_kube.wait_for(lambda: watches(fake_kube))
    with fake_kube.streams_cut():  # the job fails while the watch is down, and history is compacted
        sim.start()
        sim.fail(0, 1)
        fake_kube.compact()
    thread.join(10)
    assert outcome["result"] == JobState(
        "Failed", "MaxFailedIndexesExceeded: Job has exceeded the specified maximal number of failed indexes")
    relists = [r for r in fake_kube.requests if r.path == JOB_PATH and not r.watch]
    assert [r.query["fieldSelector"] for r in relists] == ["metadata.name=kjob"]


def test_a_job_deleted_while_the_watch_was_down_ends_the_wait(fake_kube: FakeKubeApi, kubeconfig: Path,
                                                              backend: KubernetesBackend) -> None:
    submit(k8s_spec())
    thread, outcome = in_thread(lambda: backend.wait_for_job_status("kjob", JOB))
    fake_kube.wait_for(lambda: watches(fake_kube))
    with fake_kube.streams_cut():
        fake_kube.remove("batch/v1", "Job", "kjob", NAMESPACE)
        fake_kube.compact()
    thread.join(10)
    assert str(outcome["error"]) == ("job kjob was deleted before it finished (by `dlaunch cancel`?): its checkpoints "
                                     "are kept; submit it again to resume")


def test_an_injected_410_on_a_watch_also_relists(fake_kube: FakeKubeApi, kubeconfig: Path,
                                                  backend: KubernetesBackend) -> None:
    submit(k8s_spec())
    fake_kube.fail(410, watch=True, path="/jobs$", message="too old resource version: 1 (9)")
    thread, outcome = in_thread(lambda: backend.wait_for_job_status("kjob", JOB))
    fake_kube.wait_for(lambda: len(watches(fake_kube)) == 2)
    JobSim(fake_kube, NAMESPACE, "kjob").finish(succeeded=True)
    thread.join(10)
    assert outcome["result"] == JobState("Succeeded")
    sequence = ["watch" if r.watch else "list" for r in fake_kube.requests if r.path == JOB_PATH]
    assert sequence[:3] == ["watch", "list", "watch"]


# ----- delete and list ----------------------------------------------------------------------------
def test_delete_job_is_foreground_and_takes_the_pods(fake_kube: FakeKubeApi, kubeconfig: Path,
                                                     backend: KubernetesBackend) -> None:
    submit(k8s_spec())
    JobSim(fake_kube, NAMESPACE, "kjob").start()
    fake_kube.reset_requests()
    assert backend.delete_job("kjob") == ["job.batch/kjob", "service/kjob", "configmap/kjob-config",
                                          "networkpolicy.networking.k8s.io/kjob"]
    assert {r.query.get("propagationPolicy") for r in fake_kube.requests if r.method == "DELETE"} == {"Foreground"}
    assert fake_kube.objects("v1", "Pod", NAMESPACE) == []
    assert fake_kube.objects("v1", "ConfigMap", NAMESPACE) == []


def test_list_jobs_is_this_users_unless_asked_for_everyones(fake_kube: FakeKubeApi, kubeconfig: Path,
                                                            backend: KubernetesBackend) -> None:
    submit(k8s_spec())
    _, objects = rendered(k8s_spec(name="bobs-job"))
    job = objects[-1]
    job["metadata"]["labels"]["dlaunch.dev/user"] = "bob"
    job["metadata"]["annotations"]["dlaunch.dev/submitted-by"] = "bob"
    fake_kube.add(job)
    assert [j.name for j in backend.list_jobs("alice@example.com")] == ["kjob"]
    assert [(j.name, j.submitted_by) for j in backend.list_jobs(None)] == [("bobs-job", "bob"),
                                                                           ("kjob", "alice@example.com")]


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_is_a_connection_failure(fake_kube: FakeKubeApi, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = fake_kube.write_kubeconfig(tmp_path / "kubeconfig", server=f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("KUBECONFIG", str(path))
    with pytest.raises(KubeRequestError) as caught:
        KubernetesBackend.connect(None, NAMESPACE, FAST).client.read(JOB, "kjob")
    assert caught.value.status is None
    assert str(caught.value) == ("Failed to read Job: dlaunch/kjob: connection failed: connection refused. check "
                                 "that the cluster is reachable from here (kubectl cluster-info) and that --context "
                                 "names it")


def test_a_namespace_override_must_be_rendered_into_the_objects(fake_kube: FakeKubeApi, kubeconfig: Path) -> None:
    spec, objects = rendered(k8s_spec())
    with pytest.raises(ClusterError) as caught:
        submit_to_cluster(spec, objects, context=None, namespace="other", dry_run_server=False, wait=False,
                          follow=False, replace=False)
    assert str(caught.value) == ("the objects were rendered for namespace dlaunch, not other: set "
                                 "kubernetes.namespace: other in the spec instead of passing --namespace (pod 0's "
                                 "rendezvous address contains the namespace)")
    fake_kube.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    moved = with_namespace(spec, "other")
    assert submit_to_cluster(moved, render(moved, plan_for_render(moved)), context=None, namespace="other",
                             dry_run_server=False, wait=False, follow=False, replace=False) == 0
    assert fake_kube.get("batch/v1", "Job", "kjob", "other") is not None


def test_dry_run_of_a_replacement_deletes_nothing(fake_kube: FakeKubeApi, kubeconfig: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    submit(k8s_spec())
    sim = JobSim(fake_kube, NAMESPACE, "kjob")
    sim.start()
    uid = sim.job()["metadata"]["uid"]
    capsys.readouterr()
    assert submit(k8s_spec(training={**k8s_spec()["training"], "max_steps": 20}), replace=True,
                  dry_run_server=True) == 0
    assert capsys.readouterr().out.splitlines() == [
        "job.batch/kjob would be deleted and created again (server dry run)",
        "configmap/kjob-config serverside-applied (server dry run)",
        "networkpolicy.networking.k8s.io/kjob serverside-applied (server dry run)",
        "service/kjob serverside-applied (server dry run)",
    ]
    assert [r.query.get("dryRun") for r in fake_kube.requests if r.method == "DELETE"] == ["All"]
    assert sim.job()["metadata"]["uid"] == uid


def test_submit_requests_do_not_grow_with_the_number_of_nodes(monkeypatch: pytest.MonkeyPatch,
                                                              buckets: Path) -> None:
    monkeypatch.setenv("KUBECONFIG", "")  # the benchmark points it at its own fake; restored afterwards
    module_spec = importlib.util.spec_from_file_location("submit_requests", REPO / "bench" / "submit_requests.py")
    assert module_spec is not None and module_spec.loader is not None
    bench = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(bench)
    small, large = bench.count_submit_requests(2), bench.count_submit_requests(1024)
    assert small == large
    assert small["PATCH"] == 7  # 4 objects, then the 3 that are not the Job, owned by it
