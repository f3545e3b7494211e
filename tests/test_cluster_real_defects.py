"""Issue 17's cluster-side defects against the fake API server, with the controllers played as the real
ones behave (tests/fake_kube/cluster_sim.py: the Job controller's pod admission and FailedCreate
events, KubeRay's submitter Job, Kueue's Workloads, the garbage collector).

Each test failed before its fix: `status`/`logs --name` of a Ray job read KubeRay's submitter Job;
`Retrying` read as Failed and `ValidationFailed` as Pending; pod-creation failures were invisible
and unchecked; Ray's driver output was unreachable; the ConfigMap and Service outlived the job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.targets.kubernetes import logs as job_logs
from launcher.targets.kubernetes.client import ClusterError
from launcher.targets.kubernetes.preflight import PreflightError
from launcher.targets.kubernetes.status import JobState, ray_job_state
from tests.fake_kube.cluster_sim import (
    JobSim, RaySim, local_queue, priority_class, resource_quota, service_account, workload,
)
from tests.fake_kube.fixtures import (  # noqa: F401 - fixtures
    NAMESPACE, buckets, fake_kube, in_background, k8s_spec, kubeconfig, submit,
)
from tests.fake_kube.server import FakeKubeApi

HEAD = f"pre-flight checks failed for job kjob in namespace {NAMESPACE}; nothing was created:"


@pytest.fixture(autouse=True)
def fast_followers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job_logs, "POLL_S", 0.02)


def ray_job(fake: FakeKubeApi) -> RaySim:
    """A submitted 2-worker Ray job `kjob`, started by the simulated KubeRay."""
    assert submit(k8s_spec(backend="ray")) == 0
    sim = RaySim(fake, NAMESPACE, "kjob")
    assert sim.start()
    return sim


def status_json(run_cli: Any, *args: str) -> dict[str, Any]:
    result = run_cli("status", *args, "-o", "json")
    assert result.code == 0, result.err
    return json.loads(result.out)


# ----- item 4: KubeRay's submitter Job has the RayJob's name ----------------------------------------
def test_status_by_name_of_a_ray_job_is_the_rayjob_not_kuberays_submitter_job(
        fake_kube: FakeKubeApi, kubeconfig: Path, run_cli: Any) -> None:
    ray_job(fake_kube)
    assert fake_kube.get("batch/v1", "Job", "kjob", NAMESPACE) is not None  # KubeRay's submitter
    status = status_json(run_cli, "--name", "kjob", "-n", NAMESPACE)
    assert (status["backend"], status["phase"]) == ("ray", "Running")
    assert [(pod["index"], pod["role"], pod["name"]) for pod in status["pods"]] == [
        (0, "head", "kjob-raycluster-head"), (1, "worker", "kjob-raycluster-workers-worker-0"),
        (2, "worker", "kjob-raycluster-workers-worker-1"), (None, "driver", "kjob-driver")]


def test_a_deepspeed_job_does_not_take_over_kuberays_submitter_job_of_the_same_name(
        fake_kube: FakeKubeApi, kubeconfig: Path) -> None:
    ray_job(fake_kube)
    with pytest.raises(ClusterError) as caught:
        submit(k8s_spec())
    assert str(caught.value) == (
        "job.batch/kjob in namespace dlaunch is KubeRay's submitter Job of rayjob.ray.io/kjob, not a dlaunch job: "
        "cancel that Ray job first (dlaunch cancel --name kjob -n dlaunch) or choose another job name")
    assert fake_kube.count("DELETE") == 0


# ----- item 11: Ray's training output is the driver's ----------------------------------------------
def test_logs_of_a_ray_job_show_the_driver_by_default_and_nodes_on_request(
        fake_kube: FakeKubeApi, kubeconfig: Path, run_cli: Any) -> None:
    sim = ray_job(fake_kube)
    sim.log_driver("step 1 loss 3.21")
    sim.log_node(1, "worker says hello")
    by_name = ["--name", "kjob", "-n", NAMESPACE]
    assert run_cli("logs", *by_name).out.splitlines() == ["step 1 loss 3.21"]
    assert run_cli("logs", *by_name, "--index", "1").out.splitlines() == ["worker says hello"]
    lines = run_cli("logs", *by_name, "--all").out.splitlines()
    assert lines[:2] == ["[driver] step 1 loss 3.21", "[pod 1] worker says hello"]
    assert "[pod 0] (no logs yet" not in "\n".join(lines)  # the head has a running container, with no lines


def test_submit_follow_of_a_ray_job_streams_the_driver(fake_kube: FakeKubeApi, kubeconfig: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    def play() -> None:
        fake_kube.wait_for(lambda: fake_kube.get("ray.io/v1", "RayJob", "kjob", NAMESPACE))
        sim = RaySim(fake_kube, NAMESPACE, "kjob")
        sim.start()
        sim.log_driver("training...")
        fake_kube.wait_for(lambda: any(r.path.endswith("/kjob-driver/log") for r in fake_kube.requests))
        sim.set_status(jobDeploymentStatus="Complete", jobStatus="SUCCEEDED")
    with in_background(play):
        assert submit(k8s_spec(backend="ray"), follow=True) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == ["training...", "job kjob succeeded"]


# ----- item 5: every JobDeploymentStatus ----------------------------------------------------------
RAY_STATES = {
    "new": ({}, JobState("Pending", "waiting for KubeRay to start it")),
    "initializing": ({"jobDeploymentStatus": "Initializing"}, JobState("Pending", "starting the Ray cluster")),
    "waiting": ({"jobDeploymentStatus": "Waiting"}, JobState("Pending", "waiting for the Ray job to be submitted")),
    "submitted": ({"jobDeploymentStatus": "Running", "jobStatus": "PENDING"},
                  JobState("Pending", "the Ray job is submitted and waiting to start")),
    "running": ({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, JobState("Running")),
    "driver-finishing": ({"jobDeploymentStatus": "Running", "jobStatus": "SUCCEEDED"},
                         JobState("Running", "Ray job succeeded; waiting for the driver to finish")),
    "complete": ({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, JobState("Succeeded")),
    "stopped": ({"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"}, JobState("Failed", "Ray job stopped")),
    "failed": ({"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed",
                "message": "Job entrypoint command failed with exit code 1"},
               JobState("Failed", "AppFailed: Job entrypoint command failed with exit code 1")),
    "retrying": ({"jobDeploymentStatus": "Retrying", "jobStatus": "FAILED", "reason": "AppFailed", "failed": 1},
                 JobState("Retrying", "attempt 1 of 4 failed (AppFailed); KubeRay starts it again")),
    "validation-failed": ({"jobDeploymentStatus": "ValidationFailed", "reason": "ValidationFailed",
                           "message": "The RayJob metadata is invalid: name must be a DNS-1035 label"},
                          JobState("Failed", "ValidationFailed: The RayJob metadata is invalid: name must be a "
                                             "DNS-1035 label")),
    "suspended": ({"jobDeploymentStatus": "Suspended"}, JobState("Queued", "suspended")),
    "unknown-to-this-version": ({"jobDeploymentStatus": "Hibernating"},
                                JobState("Pending", "KubeRay reports Hibernating")),
}


@pytest.mark.parametrize("status, state", list(RAY_STATES.values()), ids=list(RAY_STATES))
def test_every_kuberay_deployment_status_has_a_phase(status: dict[str, Any], state: JobState) -> None:
    rayjob = {"kind": "RayJob", "metadata": {"name": "kjob"}, "spec": {"backoffLimit": 3}, "status": status}
    assert ray_job_state(rayjob) == state


def test_wait_goes_on_while_kuberay_retries_and_a_resubmission_leaves_it_alone(
        fake_kube: FakeKubeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sim = ray_job(fake_kube)

    def play() -> None:
        fake_kube.wait_for(lambda: any(r.watch for r in fake_kube.requests))
        sim.set_status(jobDeploymentStatus="Retrying", jobStatus="FAILED", reason="AppFailed", failed=1)
        with pytest.raises(ClusterError):  # a changed spec over a retrying job needs --replace
            submit(k8s_spec(backend="ray", training={**k8s_spec()["training"], "max_steps": 20}))
        assert submit(k8s_spec(backend="ray")) == 0  # unchanged: a no-op
        sim.set_status(jobDeploymentStatus="Initializing", jobStatus="", reason="")
        sim.set_status(jobDeploymentStatus="Complete", jobStatus="SUCCEEDED")
    with in_background(play):
        assert submit(k8s_spec(backend="ray"), wait=True) == 0
    phases = [line for line in capsys.readouterr().err.splitlines() if line.startswith("job kjob: ")]
    assert phases[1].startswith("job kjob: Retrying (attempt 1 of 4 failed (AppFailed)")
    assert fake_kube.count("DELETE") == 0


def test_wait_ends_with_a_failure_on_validation_failed(fake_kube: FakeKubeApi, kubeconfig: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    def play() -> None:
        fake_kube.wait_for(lambda: any(r.watch for r in fake_kube.requests))
        RaySim(fake_kube, NAMESPACE, "kjob").set_status(
            jobDeploymentStatus="ValidationFailed", reason="ValidationFailed", message="invalid RayJob")
    with in_background(play):
        assert submit(k8s_spec(backend="ray"), wait=True) == 1
    assert "job kjob failed: ValidationFailed: invalid RayJob" in capsys.readouterr().err


# ----- item 6: pods the controllers cannot create -------------------------------------------------
def refuse_after_submit(setting: dict[str, Any], break_it: Any, fix_it: Any) -> Any:
    """Submit with the cluster in order (`fix_it`), then break it (`break_it`) before the pods are created."""
    def run(fake: FakeKubeApi) -> None:
        fix_it(fake)
        assert submit(k8s_spec(kubernetes={**k8s_spec()["kubernetes"], **setting})) == 0
        break_it(fake)
    return run


QUOTA_MESSAGE = ('pods "kjob-1-" is forbidden: exceeded quota: gpu-team, requested: requests.cpu=2, used: '
                 'requests.cpu=2, limited: requests.cpu=3')
CREATE_FAILURES = {
    "quota": (refuse_after_submit({}, lambda fake: fake.add(resource_quota("gpu-team", NAMESPACE,
                                                                           {"requests.cpu": "3"})), lambda fake: None),
              f"pods cannot be created: Error creating: {QUOTA_MESSAGE}; the namespace's ResourceQuota cannot hold "
              "the job: ask for more quota, or request fewer resources (kubectl describe resourcequota)"),
    "service-account": (
        refuse_after_submit({"service_account": "trainer"},
                            lambda fake: fake.remove("v1", "ServiceAccount", "trainer", NAMESPACE),
                            lambda fake: fake.add(service_account("trainer", NAMESPACE))),
        'pods cannot be created: Error creating: pods "kjob-0-" is forbidden: error looking up service account '
        'dlaunch/trainer: serviceaccount "trainer" not found; create the ServiceAccount, or fix '
        "kubernetes.service_account"),
    "priority-class": (
        refuse_after_submit({"priority_class": "high"},
                            lambda fake: fake.remove("scheduling.k8s.io/v1", "PriorityClass", "high"),
                            lambda fake: fake.add(priority_class("high"))),
        'pods cannot be created: Error creating: pods "kjob-0-" is forbidden: no PriorityClass with name high was '
        "found; ask a cluster admin to create the PriorityClass, or fix kubernetes.priority_class"),
    "pod-security": (
        refuse_after_submit({"host_network": True}, lambda fake: label_namespace(fake, "baseline"), lambda fake: None),
        'pods cannot be created: Error creating: pods "kjob-0-" is forbidden: violates PodSecurity "baseline:latest": '
        "host namespaces (hostNetwork=true); the namespace's Pod Security level refuses these pods: drop "
        "kubernetes.host_network, or use a namespace that allows them"),
}


def label_namespace(fake: FakeKubeApi, level: str) -> None:
    namespace = fake.get("v1", "Namespace", NAMESPACE)
    assert namespace is not None
    namespace["metadata"]["labels"] = {"pod-security.kubernetes.io/enforce": level}
    fake.add(namespace)


@pytest.mark.parametrize("setup, problem", list(CREATE_FAILURES.values()), ids=list(CREATE_FAILURES))
def test_status_says_why_the_job_controller_cannot_create_pods(setup: Any, problem: str, fake_kube: FakeKubeApi,
                                                               kubeconfig: Path, run_cli: Any) -> None:
    setup(fake_kube)
    assert not JobSim(fake_kube, NAMESPACE, "kjob").start()
    status = status_json(run_cli, "--name", "kjob", "-n", NAMESPACE)
    assert (status["phase"], status["problem"]) == ("Pending", problem)
    headline = run_cli("status", "--name", "kjob", "-n", NAMESPACE).out.splitlines()[0]
    assert headline == f"job kjob (deepspeed, namespace dlaunch): Pending (0/2 pods ready); {problem}"


def test_status_of_a_ray_job_whose_head_pod_is_refused(fake_kube: FakeKubeApi, kubeconfig: Path,
                                                       run_cli: Any) -> None:
    assert submit(k8s_spec(backend="ray")) == 0
    fake_kube.add(resource_quota("small", NAMESPACE, {"limits.memory": "8Gi"}))
    assert not RaySim(fake_kube, NAMESPACE, "kjob").start()
    status = status_json(run_cli, "--name", "kjob", "-n", NAMESPACE)
    assert status["phase"] == "Pending"
    assert status["problem"].startswith(
        "pods cannot be created: Failed to create head Pod dlaunch/kjob-raycluster-head, pods "
        '"kjob-raycluster-head" is forbidden: exceeded quota: small, requested: limits.memory=')


def test_status_reads_creation_failures_only_while_pods_are_missing(fake_kube: FakeKubeApi, kubeconfig: Path,
                                                                    run_cli: Any) -> None:
    assert submit(k8s_spec()) == 0
    fake_kube.add(resource_quota("gpu-team", NAMESPACE, {"requests.cpu": "3"}))
    sim = JobSim(fake_kube, NAMESPACE, "kjob")
    assert not sim.start()
    fake_kube.remove("v1", "ResourceQuota", "gpu-team", NAMESPACE)
    assert sim.start()  # the controller's retry, after the quota grew: the old event is history
    fake_kube.reset_requests()
    status = status_json(run_cli, "--name", "kjob", "-n", NAMESPACE)
    assert (status["phase"], status["problem"]) == ("Running", "")
    assert fake_kube.count("GET", "/events$") == 0


# ----- item 6: pre-flight catches them ------------------------------------------------------------
PREFLIGHT = {
    "service-account-missing": (
        {"service_account": "trainer"}, lambda fake: None,
        ["ServiceAccount 'trainer' (kubernetes.service_account) does not exist in namespace 'dlaunch': create it "
         "(kubectl -n dlaunch create serviceaccount trainer) or fix kubernetes.service_account"]),
    "priority-class-missing": (
        {"priority_class": "high"}, lambda fake: None,
        ["PriorityClass 'high' (kubernetes.priority_class) does not exist (no pod of the job could be created): fix "
         "kubernetes.priority_class (kubectl get priorityclasses lists them), or ask a cluster admin to create it"]),
    "priority-class-missing-with-kueue": (
        {"priority_class": "high", "queue": "gpu"}, lambda fake: fake.add(local_queue("gpu", NAMESPACE)),
        ["PriorityClass 'high' (kubernetes.priority_class) does not exist (Kueue would never create a Workload for "
         "the job, so it would wait forever): fix kubernetes.priority_class (kubectl get priorityclasses lists "
         "them), or ask a cluster admin to create it"]),
    "pod-security-refuses-host-network": (
        {"host_network": True}, lambda fake: label_namespace(fake, "restricted"),
        ["namespace 'dlaunch' enforces the restricted Pod Security level, which refuses the job's pods "
         "(hostNetwork=true): drop kubernetes.host_network, or use a namespace whose "
         "pod-security.kubernetes.io/enforce level allows them"]),
    "quota-too-small-for-the-job": (
        {}, lambda fake: fake.add(resource_quota("team", NAMESPACE, {"requests.memory": "6Gi", "pods": "10"})),
        ["ResourceQuota 'team' allows requests.memory=6Gi in namespace 'dlaunch', but the job's pods need 8Gi "
         "together: ask for a larger quota, or request fewer nodes or resources"]),
}


@pytest.mark.parametrize("kubernetes, setup, problems", list(PREFLIGHT.values()), ids=list(PREFLIGHT))
def test_preflight_catches_what_would_stop_pod_creation(kubernetes: dict[str, Any], setup: Any,
                                                        problems: list[str], fake_kube: FakeKubeApi,
                                                        kubeconfig: Path) -> None:
    setup(fake_kube)
    with pytest.raises(PreflightError) as caught:
        submit(k8s_spec(kubernetes={**k8s_spec()["kubernetes"], **kubernetes}))
    assert str(caught.value) == "\n".join([HEAD, *(f"  - {line}" for line in problems)])
    assert fake_kube.count("PATCH") == 0


def test_a_restricted_namespace_admits_dlaunchs_pods(fake_kube: FakeKubeApi, kubeconfig: Path) -> None:
    label_namespace(fake_kube, "restricted")
    assert submit(k8s_spec(backend="ray")) == 0
    assert submit(k8s_spec(name="other")) == 0
    assert JobSim(fake_kube, NAMESPACE, "other").start()


def test_a_quota_with_no_room_now_is_a_note(fake_kube: FakeKubeApi, kubeconfig: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    fake_kube.add(resource_quota("team", NAMESPACE, {"requests.cpu": "8"}, used={"requests.cpu": "6"}))
    assert submit(k8s_spec()) == 0
    assert ("note: ResourceQuota 'team' has 2 of requests.cpu left, the job needs 4: its pods wait until other "
            "jobs free quota") in capsys.readouterr().err.splitlines()


# ----- item 6 and 11: Kueue ----------------------------------------------------------------------
def queued_job(fake: FakeKubeApi) -> dict[str, Any]:
    fake.add(local_queue("gpu", NAMESPACE))
    fake.add(priority_class("high"))
    assert submit(k8s_spec(kubernetes={**k8s_spec()["kubernetes"], "queue": "gpu", "priority_class": "high"})) == 0
    job = fake.get("batch/v1", "Job", "kjob", NAMESPACE)
    assert job is not None and job["spec"]["suspend"]
    return job


def test_status_explains_a_queued_job_without_a_workload_and_its_missing_priority_class(
        fake_kube: FakeKubeApi, kubeconfig: Path, run_cli: Any) -> None:
    queued_job(fake_kube)
    fake_kube.remove("scheduling.k8s.io/v1", "PriorityClass", "high")  # Kueue's reconciler fails on it
    status = status_json(run_cli, "--name", "kjob", "-n", NAMESPACE)
    assert (status["phase"], status["problem"]) == (
        "Queued", "Kueue cannot create a Workload for it: PriorityClass 'high' does not exist; ask a cluster admin "
                  "to create it, or fix kubernetes.priority_class and submit with --replace")


@pytest.mark.parametrize("version", ["v1beta2", "v1beta1"], ids=["v1beta2", "v1beta1-only-kueue"])
def test_status_reads_the_workload_preferring_v1beta2(version: str, fake_kube: FakeKubeApi, kubeconfig: Path,
                                                      run_cli: Any) -> None:
    job = queued_job(fake_kube)
    if version == "v1beta1":
        fake_kube.uninstall("kueue.x-k8s.io/v1beta2")
    pending = {"type": "QuotaReserved", "status": "False", "reason": "Pending",
               "message": "couldn't assign flavors to pod set main: insufficient quota for nvidia.com/gpu"}
    fake_kube.add(workload(job, version, [pending]))
    fake_kube.reset_requests()
    status = status_json(run_cli, "--name", "kjob", "-n", NAMESPACE)
    assert status["problem"] == ("Kueue: Pending: couldn't assign flavors to pod set main: insufficient quota for "
                                 "nvidia.com/gpu")
    reads = [r.path for r in fake_kube.requests if "/workloads" in r.path]
    assert reads[0] == f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{NAMESPACE}/workloads"


def test_preflight_finds_the_queue_of_a_v1beta1_only_kueue(fake_kube: FakeKubeApi, kubeconfig: Path) -> None:
    fake_kube.uninstall("kueue.x-k8s.io/v1beta2")
    fake_kube.add(local_queue("gpu", NAMESPACE, version="v1beta1"))
    assert submit(k8s_spec(kubernetes={**k8s_spec()["kubernetes"], "queue": "gpu"})) == 0


# ----- item 11: the ConfigMap and Service go with the job -----------------------------------------
def test_the_configmap_and_service_are_owned_by_the_job_and_go_with_its_ttl(fake_kube: FakeKubeApi,
                                                                            kubeconfig: Path) -> None:
    assert submit(k8s_spec()) == 0
    sim = JobSim(fake_kube, NAMESPACE, "kjob")
    uid = sim.job()["metadata"]["uid"]
    for kind, name in (("ConfigMap", "kjob-config"), ("Service", "kjob")):
        obj = fake_kube.get("v1", kind, name, NAMESPACE)
        assert obj is not None
        assert obj["metadata"]["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job", "name": "kjob",
                                                       "uid": uid, "controller": False, "blockOwnerDeletion": True}]
    assert sim.start()
    sim.finish(succeeded=True)
    sim.expire_ttl()
    for api_version, kind in (("batch/v1", "Job"), ("v1", "Pod"), ("v1", "ConfigMap"), ("v1", "Service"),
                              ("networking.k8s.io/v1", "NetworkPolicy")):
        assert fake_kube.objects(api_version, kind, NAMESPACE) == [], kind


def test_cancel_of_a_ray_job_deletes_the_rayjob_and_everything_it_owns(fake_kube: FakeKubeApi, kubeconfig: Path,
                                                                       run_cli: Any) -> None:
    ray_job(fake_kube)
    rayjob = fake_kube.get("ray.io/v1", "RayJob", "kjob", NAMESPACE)
    assert rayjob is not None
    config_map = fake_kube.get("v1", "ConfigMap", "kjob-config", NAMESPACE)
    assert config_map is not None and config_map["metadata"]["ownerReferences"][0]["uid"] == rayjob["metadata"]["uid"]
    result = run_cli("cancel", "--name", "kjob", "-n", NAMESPACE)
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == (
        "job kjob: deleting (foreground: pods stop first, each within its grace period) rayjob.ray.io/kjob, "
        "configmap/kjob-config, networkpolicy.networking.k8s.io/kjob in namespace dlaunch")
    for api_version, kind in (("ray.io/v1", "RayJob"), ("ray.io/v1", "RayCluster"), ("batch/v1", "Job"),
                              ("v1", "Pod"), ("v1", "ConfigMap"), ("networking.k8s.io/v1", "NetworkPolicy")):
        assert fake_kube.objects(api_version, kind, NAMESPACE) == [], kind


def test_replace_recreates_the_owned_objects_for_the_new_job(fake_kube: FakeKubeApi, kubeconfig: Path) -> None:
    assert submit(k8s_spec()) == 0
    old_uid = JobSim(fake_kube, NAMESPACE, "kjob").job()["metadata"]["uid"]
    assert submit(k8s_spec(training={**k8s_spec()["training"], "max_steps": 20}), replace=True) == 0
    new_uid = JobSim(fake_kube, NAMESPACE, "kjob").job()["metadata"]["uid"]
    config_map = fake_kube.get("v1", "ConfigMap", "kjob-config", NAMESPACE)
    assert new_uid != old_uid and config_map is not None
    assert [ref["uid"] for ref in config_map["metadata"]["ownerReferences"]] == [new_uid]
    assert '"max_steps": 20' in config_map["data"]["job.json"]


def test_status_json_names_pods_by_index_not_rank(fake_kube: FakeKubeApi, kubeconfig: Path, run_cli: Any,
                                                  tmp_path: Path) -> None:
    assert submit(k8s_spec()) == 0
    assert JobSim(fake_kube, NAMESPACE, "kjob").start()
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(k8s_spec()), encoding="utf-8")
    assert run_cli("status", str(path)).out.splitlines()[2].split()[0] == "INDEX"
    assert all("rank" not in pod for pod in status_json(run_cli, str(path))["pods"])
