"""The fake API server and `JobSim` against what the real API server and Job controller do with the
Job dlaunch renders (`backoffLimitPerIndex: 0`, `maxFailedIndexes: 0`, `podReplacementPolicy:
Failed`, a podFailurePolicy; issue 17 items 7 and 9), and `k8s/rbac.yaml` against every request
dlaunch's commands make. Upstream functions are cited in tests/fake_kube/jobs.py.

Each test failed against the fake before it modelled this: it stored any Job as sent (no
defaults, no 422), had no controller decisions (`JobSim.fail`/`succeed`), no owner-reference
admission, and `rbac.yaml` lacked what pre-flight reads.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.targets.kubernetes import logs as job_logs
from launcher.targets.kubernetes.client import ClusterError
from launcher.targets.kubernetes.render import RDZV_TIMEOUTS, WORKER_CONTAINER
from tests.fake_kube.api import APPLY_PATCH, Request, Response
from tests.fake_kube.cluster_sim import JobSim, RaySim, local_queue, priority_class, secret, service_account
from tests.fake_kube.fixtures import (  # noqa: F401 - fixtures
    NAMESPACE, buckets, fake_kube, in_background, k8s_spec, kubeconfig, rendered, submit,
)
from tests.fake_kube.jobs import (
    FAILURE_COUNT_ANNOTATION, IGNORED_FAILURE_COUNT_ANNOTATION, MAX_INT32, MAX_POD_FAILURE_BACKOFF_S, indexes_text,
    parse_indexes,
)
from tests.fake_kube.server import FakeKubeApi
from training.exitcodes import CONFIG_ERROR, POST_TRAINING_FAILED, PREEMPTED

REPO = Path(__file__).resolve().parent.parent
JOBS = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
MAX_FAILED = ("MaxFailedIndexesExceeded", "Job has exceeded the specified maximal number of failed indexes")


@pytest.fixture(autouse=True)
def fast_followers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job_logs, "POLL_S", 0.02)


def rendered_job(**sections: Any) -> dict[str, Any]:
    return next(o for o in rendered(k8s_spec(**sections))[1] if o["kind"] == "Job")


def apply(fake: FakeKubeApi, obj: dict[str, Any], dry_run: bool = False) -> Response:
    """A server-side apply of `obj` as dlaunch sends it, through the fake's request handling."""
    query = {"fieldManager": "dlaunch", "force": "true", **({"dryRun": "All"} if dry_run else {})}
    headers = {"authorization": f"Bearer {fake.api.token}", "content-type": APPLY_PATCH}
    path = f"{JOBS}/{obj['metadata']['name']}"
    return fake.api.handle(Request("PATCH", path, query, headers, yaml.safe_dump(obj).encode()))


def started(fake: FakeKubeApi, **sections: Any) -> JobSim:
    """A submitted 2-node DeepSpeed job `kjob` whose pods run."""
    assert submit(k8s_spec(**sections)) == 0
    sim = JobSim(fake, NAMESPACE, "kjob")
    assert sim.start()
    return sim


def conditions(job: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(c["type"], c.get("reason", ""), c.get("message", "")) for c in job["status"].get("conditions") or []]


def status_json(run_cli: Any) -> dict[str, Any]:
    result = run_cli("status", "--name", "kjob", "-n", NAMESPACE, "-o", "json")
    assert result.code == 0, result.err
    return json.loads(result.out)


# ----- the API server: defaults and validation ------------------------------------------------------
def test_the_rendered_job_is_stored_with_the_api_servers_defaults(fake_kube: FakeKubeApi, kubeconfig: Path) -> None:
    assert submit(k8s_spec()) == 0
    spec = JobSim(fake_kube, NAMESPACE, "kjob").job()["spec"]
    assert (spec["backoffLimit"], spec["backoffLimitPerIndex"], spec["maxFailedIndexes"]) == (MAX_INT32, 0, 0)
    assert (spec["podReplacementPolicy"], spec["suspend"], spec["manualSelector"]) == ("Failed", False, False)
    version = JobSim(fake_kube, NAMESPACE, "kjob").job()["metadata"]["resourceVersion"]
    assert submit(k8s_spec()) == 0  # unchanged: the defaulted object is the same, no new version
    assert JobSim(fake_kube, NAMESPACE, "kjob").job()["metadata"]["resourceVersion"] == version


def test_a_job_without_per_index_limits_gets_six_retries(fake_kube: FakeKubeApi) -> None:
    job = rendered_job()
    for name in ("backoffLimitPerIndex", "maxFailedIndexes", "podFailurePolicy", "podReplacementPolicy"):
        job["spec"].pop(name)
    assert apply(fake_kube, job).status == 201
    spec = JobSim(fake_kube, NAMESPACE, "kjob").job()["spec"]
    assert (spec["backoffLimit"], spec["podReplacementPolicy"]) == (6, "TerminatingOrFailed")


def broken(change: Any) -> dict[str, Any]:
    job = copy.deepcopy(rendered_job())
    change(job["spec"])
    return job


def drop(*names: str) -> Any:
    def change(spec: dict[str, Any]) -> None:
        for name in names:
            spec.pop(name)
    return change


def both(first: Any, second: Any) -> Any:
    def change(spec: dict[str, Any]) -> None:
        first(spec)
        second(spec)
    return change


def rule(index: int, **values: Any) -> Any:
    return lambda spec: spec["podFailurePolicy"]["rules"][index].update(values)


def exit_codes(index: int, **values: Any) -> Any:
    return lambda spec: spec["podFailurePolicy"]["rules"][index]["onExitCodes"].update(values)


REFUSED = {
    "per-index-limits-need-indexed": (
        lambda spec: spec.update(completionMode="NonIndexed"),
        "[spec.backoffLimitPerIndex: Invalid value: 0: requires indexed completion mode, spec.maxFailedIndexes: "
        "Invalid value: 0: requires indexed completion mode]"),
    "max-failed-indexes-needs-backoff-limit-per-index": (
        drop("backoffLimitPerIndex"), "spec.backoffLimitPerIndex: Required value: when maxFailedIndexes is specified"),
    "fail-index-needs-backoff-limit-per-index": (
        both(drop("backoffLimitPerIndex", "maxFailedIndexes"), rule(0, action="FailIndex")),
        'spec.podFailurePolicy.rules[0].action: Invalid value: "FailIndex": requires the backoffLimitPerIndex to be '
        "set"),
    "max-failed-indexes-above-completions": (
        lambda spec: spec.update(maxFailedIndexes=3),
        "spec.maxFailedIndexes: Invalid value: 3: must be less than or equal to completions"),
    "indexed-needs-completions": (drop("completions"), "spec.completions: Required value: when completion mode is "
                                                       "Indexed"),
    "negative-per-index-limit": (lambda spec: spec.update(backoffLimitPerIndex=-1),
                                 "spec.backoffLimitPerIndex: Invalid value: -1: must be greater than or equal to 0"),
    "replacement-policy-with-a-failure-policy": (
        lambda spec: spec.update(podReplacementPolicy="TerminatingOrFailed"),
        'spec.podReplacementPolicy: Unsupported value: "TerminatingOrFailed": supported values: "Failed"'),
    "failure-policy-needs-restart-never": (
        lambda spec: spec["template"]["spec"].update(restartPolicy="OnFailure"),
        'spec.template.spec.restartPolicy: Invalid value: "OnFailure": only "Never" is supported when '
        "podFailurePolicy is specified"),
    "exit-code-0-with-in": (exit_codes(0, values=[0, 78]),
                            "spec.podFailurePolicy.rules[0].onExitCodes.values[0]: Invalid value: 0: must not be 0 "
                            "for the In operator"),
    "unordered-exit-codes": (exit_codes(0, values=[80, 78]),
                             "spec.podFailurePolicy.rules[0].onExitCodes.values: Invalid value: []int32{80, 78}: must "
                             "be ordered"),
    "unknown-container": (exit_codes(1, containerName="trainer"),
                          'spec.podFailurePolicy.rules[1].onExitCodes.containerName: Invalid value: "trainer": must '
                          "be one of the container or initContainer names in the pod template"),
    "unknown-action": (rule(2, action="Restart"),
                       'spec.podFailurePolicy.rules[2].action: Unsupported value: "Restart": supported values: '
                       '"Count", "FailIndex", "FailJob", "Ignore"'),
}


@pytest.mark.parametrize("change, error", list(REFUSED.values()), ids=list(REFUSED))
@pytest.mark.parametrize("dry_run", [False, True], ids=["apply", "dry-run"])
def test_the_api_server_refuses_what_validate_job_spec_refuses(change: Any, error: str, dry_run: bool,
                                                               fake_kube: FakeKubeApi) -> None:
    answer = apply(fake_kube, broken(change), dry_run)
    assert (answer.status, answer.body["reason"]) == (422, "Invalid")
    assert answer.body["message"] == f'Job.batch "kjob" is invalid: {error}'
    assert fake_kube.objects("batch/v1", "Job", NAMESPACE) == []


def test_create_is_validated_like_apply(fake_kube: FakeKubeApi) -> None:
    job = broken(drop("backoffLimitPerIndex"))
    headers = {"authorization": f"Bearer {fake_kube.api.token}", "content-type": "application/json"}
    answer = fake_kube.api.handle(Request("POST", JOBS, {}, headers, json.dumps(job).encode()))
    assert answer.status == 422


@pytest.mark.parametrize("sections", [{}, {"kubernetes": {**k8s_spec()["kubernetes"], "queue": "gpu"}},
                                      {"resources": {**k8s_spec()["resources"], "nodes": 1}}],
                         ids=["plain", "kueue", "one-node"])
def test_every_rendered_job_passes_the_api_servers_validation(sections: dict[str, Any], fake_kube: FakeKubeApi) -> None:
    assert apply(fake_kube, rendered_job(**sections), dry_run=True).status == 201


# ----- the Job controller: dlaunch's Job ------------------------------------------------------------
def test_a_failed_rank_fails_the_job_at_once_without_a_replacement(fake_kube: FakeKubeApi, kubeconfig: Path,
                                                                   run_cli: Any) -> None:
    sim = started(fake_kube)
    job = sim.fail(1, 1)
    assert conditions(job) == [("FailureTarget", *MAX_FAILED), ("Failed", *MAX_FAILED)]
    assert (job["status"]["failedIndexes"], job["status"]["failed"], job["status"]["active"]) == ("1", 2, 0)
    assert [p["metadata"]["name"] for p in sim.job_pods()] == ["kjob-1-g0"]  # rank 0 was stopped and is gone
    events = [e for e in fake_kube.objects("v1", "Event", NAMESPACE) if e["involvedObject"]["kind"] == "Job"]
    assert [(e["reason"], e["type"]) for e in events] == [("MaxFailedIndexesExceeded", "Warning")]
    assert run_cli("status", "--name", "kjob", "-n", NAMESPACE).out.splitlines()[0] == (
        "job kjob (deepspeed, namespace dlaunch): Failed (MaxFailedIndexesExceeded: Job has exceeded the specified "
        "maximal number of failed indexes)")


def test_the_job_is_failing_while_the_other_ranks_stop(fake_kube: FakeKubeApi, kubeconfig: Path) -> None:
    sim = started(fake_kube)
    job = sim.fail(1, 1, settle=False)
    assert conditions(job) == [("FailureTarget", *MAX_FAILED)]
    assert (job["status"]["terminating"], job["status"]["active"]) == (1, 0)
    assert fake_kube.get("v1", "Pod", "kjob-0-g0", NAMESPACE)["metadata"]["deletionTimestamp"]
    assert conditions(sim.settle())[-1] == ("Failed", *MAX_FAILED)
    assert sim.job()["status"]["terminating"] == 0


def test_status_reports_the_outcome_while_the_other_ranks_stop(fake_kube: FakeKubeApi, kubeconfig: Path,
                                                              run_cli: Any) -> None:
    """FailureTarget is already the outcome: `status` must not say Pending for the grace period."""
    sim = started(fake_kube)
    sim.fail(1, 1, settle=False)
    assert status_json(run_cli)["phase"] == "Failed"


@pytest.mark.parametrize("code, rule_index", [(CONFIG_ERROR, 0), (POST_TRAINING_FAILED, 1)], ids=["78", "80"])
def test_fail_job_exit_codes_end_the_job_with_the_pod_failure_policy(code: int, rule_index: int,
                                                                     fake_kube: FakeKubeApi, kubeconfig: Path,
                                                                     run_cli: Any) -> None:
    sim = started(fake_kube)
    job = sim.fail(0, code)
    message = (f"Container {WORKER_CONTAINER} for pod {NAMESPACE}/kjob-0-g0 failed with exit code {code} matching "
               f"FailJob rule at index {rule_index}")
    assert conditions(job)[-1] == ("Failed", "PodFailurePolicy", message)
    assert job["status"]["failedIndexes"] == "0"
    assert status_json(run_cli)["reason"] == f"PodFailurePolicy: {message}"


def test_post_training_failure_after_the_others_finished_ends_the_job_for_wait(
        fake_kube: FakeKubeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Item 9: ranks that exited 0 never rerun, so rank 0's late failure must end the Job at once."""
    def play() -> None:
        fake_kube.wait_for(lambda: any(r.watch for r in fake_kube.requests)
                           and fake_kube.get("batch/v1", "Job", "kjob", NAMESPACE))
        sim = JobSim(fake_kube, NAMESPACE, "kjob")
        sim.start()
        assert "conditions" not in sim.succeed(1)["status"]
        job = sim.fail(0, POST_TRAINING_FAILED)
        assert (job["status"]["completedIndexes"], job["status"]["failedIndexes"]) == ("1", "0")
    with in_background(play):
        assert submit(k8s_spec(), wait=True) == 1
    assert "job kjob failed: PodFailurePolicy: Container worker for pod dlaunch/kjob-0-g0 failed with exit code 80" \
        in capsys.readouterr().err


def test_every_rank_succeeding_completes_the_job(fake_kube: FakeKubeApi, kubeconfig: Path) -> None:
    sim = started(fake_kube)
    sim.succeed(0)
    job = sim.succeed(1)
    reached = ("CompletionsReached", "Reached expected number of succeeded pods")
    assert conditions(job) == [("SuccessCriteriaMet", *reached), ("Complete", *reached)]
    assert (job["status"]["succeeded"], job["status"]["completedIndexes"]) == (2, "0,1")


@pytest.mark.parametrize("code, disruption", [(PREEMPTED, None), (137, "PreemptionByScheduler")],
                         ids=["exit-75", "disruption-target"])
def test_ignored_failures_replace_the_pod_without_counting(code: int, disruption: str | None,
                                                           fake_kube: FakeKubeApi, kubeconfig: Path,
                                                           run_cli: Any) -> None:
    sim = started(fake_kube)
    job = sim.fail(0, code, disruption=disruption)
    assert "conditions" not in job["status"] and job["status"]["failed"] == 0
    assert (job["status"]["failedIndexes"], job["status"]["active"]) == ("", 2)
    annotations = fake_kube.get("v1", "Pod", "kjob-0-g1", NAMESPACE)["metadata"]["annotations"]
    assert (annotations[FAILURE_COUNT_ANNOTATION], annotations[IGNORED_FAILURE_COUNT_ANNOTATION]) == ("0", "1")
    status = status_json(run_cli)
    assert status["phase"] == "Running"
    assert [(pod["name"], pod["restarts"]) for pod in status["pods"]] == [("kjob-0-g1", 1), ("kjob-1-g0", 0)]


def test_replacement_backoff_grows_per_index_and_stays_within_the_rendezvous_join_timeout(
        fake_kube: FakeKubeApi, kubeconfig: Path) -> None:
    """Ignored failures still count for the delay (getRemainingTimePerIndex), so a much-preempted index
    waits up to 10 minutes: survivors wait for it in the rendezvous."""
    sim = started(fake_kube)
    delays = []
    for _ in range(8):
        sim.fail(0, PREEMPTED)
        delays.append(sim.replacement_delays[0])
    assert delays == [10, 20, 40, 80, 160, 320, 600, 600]
    assert MAX_POD_FAILURE_BACKOFF_S < RDZV_TIMEOUTS["join_timeout"]
    sim.fail(1, PREEMPTED)
    assert sim.replacement_delays[1] == 10  # per index: rank 1's first failure


# ----- the Job controller: other Jobs --------------------------------------------------------------
def plain_job(fake: FakeKubeApi, **spec: Any) -> JobSim:
    """`kjob` with the rendered pod template and `spec` instead of dlaunch's failure fields, started."""
    job = rendered_job()
    for name in ("backoffLimitPerIndex", "maxFailedIndexes", "podFailurePolicy", "podReplacementPolicy"):
        job["spec"].pop(name)
    job["spec"].update(spec)
    assert apply(fake, job).status == 201
    sim = JobSim(fake, NAMESPACE, "kjob")
    assert sim.start()
    return sim


def test_without_per_index_limits_every_failure_counts_against_backoff_limit(fake_kube: FakeKubeApi) -> None:
    sim = plain_job(fake_kube, backoffLimit=2)
    for attempt in (1, 2):
        job = sim.fail(0, 1)
        assert "conditions" not in job["status"] and job["status"]["failed"] == attempt
    assert conditions(sim.fail(1, 1))[-1] == ("Failed", "BackoffLimitExceeded",
                                              "Job has reached the specified backoff limit")


def test_fail_index_loses_one_index_and_the_job_fails_when_all_are_done(fake_kube: FakeKubeApi) -> None:
    policy = {"rules": [{"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [3]}}]}
    sim = plain_job(fake_kube, backoffLimitPerIndex=1, maxFailedIndexes=1, podFailurePolicy=policy)
    job = sim.fail(1, 3)
    assert (job["status"]["failedIndexes"], job["status"]["active"]) == ("1", 1)
    assert fake_kube.get("v1", "Pod", "kjob-1-g1", NAMESPACE) is None  # a failed index is not replaced
    job = sim.fail(0, 1)  # within backoffLimitPerIndex: replaced, counted
    annotations = fake_kube.get("v1", "Pod", "kjob-0-g1", NAMESPACE)["metadata"]["annotations"]
    assert (job["status"]["failed"], annotations[FAILURE_COUNT_ANNOTATION]) == (2, "1")
    assert conditions(sim.succeed(0))[-1] == ("Failed", "FailedIndexes", "Job has failed indexes")


@pytest.mark.parametrize("indexes, text", [(set(), ""), ({0}, "0"), ({0, 1}, "0,1"), ({0, 1, 2, 5}, "0-2,5"),
                                           ({3, 4, 7, 8, 9}, "3,4,7-9")])
def test_indexes_are_written_as_the_controller_writes_them(indexes: set[int], text: str) -> None:
    assert indexes_text(indexes) == text
    assert parse_indexes(text) == indexes


def test_kuberays_submitter_job_takes_the_rayjobs_backoff_limit(fake_kube: FakeKubeApi, kubeconfig: Path) -> None:
    assert submit(k8s_spec(backend="ray")) == 0
    rayjob = fake_kube.get("ray.io/v1", "RayJob", "kjob", NAMESPACE)
    sim = RaySim(fake_kube, NAMESPACE, "kjob")
    assert sim.submitter_job(rayjob)["spec"]["backoffLimit"] == 2  # KubeRay's default
    rayjob["spec"]["submitterConfig"] = {"backoffLimit": 0}
    submitter = sim.submitter_job(rayjob)
    assert (submitter["spec"]["backoffLimit"], submitter["spec"]["completionMode"]) == (0, "NonIndexed")


# ----- RBAC ---------------------------------------------------------------------------------------
def test_owner_references_need_update_on_the_owners_finalizers(fake_kube: FakeKubeApi, kubeconfig: Path) -> None:
    """OwnerReferencesPermissionEnforcement (OpenShift): dlaunch's ConfigMap, Service and NetworkPolicy
    name the Job as an owner with blockOwnerDeletion."""
    fake_kube.enforce_owner_references()
    fake_kube.deny("update", "jobs", "batch", "finalizers")
    with pytest.raises(ClusterError) as caught:
        submit(k8s_spec())
    assert "cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers on" \
        in str(caught.value)


def granted(rules: list[dict[str, Any]], attrs: dict[str, Any]) -> bool:
    resource = attrs["resource"] + (f"/{attrs['subresource']}" if attrs["subresource"] else "")
    return any(attrs["group"] in rule["apiGroups"] and resource in rule["resources"] and attrs["verb"] in rule["verbs"]
               for rule in rules)


def rbac_rules() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The Role's rules (in namespace dlaunch) and the ClusterRole's, each checked to be bound."""
    docs = [doc for doc in yaml.safe_load_all((REPO / "k8s" / "rbac.yaml").read_text()) if doc]
    by_kind = {doc["kind"]: doc for doc in docs}
    for binding, role in (("RoleBinding", "Role"), ("ClusterRoleBinding", "ClusterRole")):
        assert by_kind[binding]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role,
                                               "name": by_kind[role]["metadata"]["name"]}
    assert by_kind["Role"]["metadata"]["namespace"] == NAMESPACE
    return by_kind["Role"]["rules"], by_kind["ClusterRole"]["rules"]


def use_every_command(fake: FakeKubeApi, run_cli: Any, backend: str) -> None:
    """Submit (with every pre-flight check that reads the cluster), status, logs, list, resubmit, cancel."""
    kubernetes = {**k8s_spec()["kubernetes"], "queue": "gpu", "priority_class": "high", "service_account": "trainer",
                  "secrets": {"s3": "s3-credentials"}}
    assert submit(k8s_spec(backend=backend, kubernetes=kubernetes)) == 0
    assert submit(k8s_spec(backend=backend, kubernetes=kubernetes, training={**k8s_spec()["training"],
                                                                             "max_steps": 20}), replace=True) == 0
    (RaySim if backend == "ray" else JobSim)(fake, NAMESPACE, "kjob").start()
    for args in (["status", "--name", "kjob"], ["logs", "--name", "kjob", "--all"], ["list"],
                 ["cancel", "--name", "kjob"]):
        result = run_cli(*args, "-n", NAMESPACE)
        assert result.code == 0, result.err


@pytest.mark.parametrize("backend", ["deepspeed", "ray"])
def test_rbac_yaml_grants_every_authorization_dlaunch_needs(backend: str, fake_kube: FakeKubeApi, kubeconfig: Path,
                                                            run_cli: Any) -> None:
    fake_kube.enforce_owner_references()
    for obj in (local_queue("gpu", NAMESPACE), priority_class("high"), service_account("trainer", NAMESPACE),
                secret("s3-credentials", NAMESPACE, ("credentials",))):
        fake_kube.add(obj)
    use_every_command(fake_kube, run_cli, backend)
    role, cluster_role = rbac_rules()
    refused = {json.dumps(attrs, sort_keys=True) for attrs in fake_kube.authorizations
               if not granted(role if attrs["namespace"] == NAMESPACE else cluster_role, attrs)}
    assert refused == set()
    asked = {(a["verb"], a["group"], a["resource"], a["subresource"]) for a in fake_kube.authorizations}
    owner = ("batch", "jobs") if backend == "deepspeed" else ("ray.io", "rayjobs")
    assert {("get", "", "serviceaccounts", ""), ("list", "", "resourcequotas", ""), ("get", "", "secrets", ""),
            ("list", "kueue.x-k8s.io", "localqueues", ""), ("get", "scheduling.k8s.io", "priorityclasses", ""),
            ("update", *owner, "finalizers")} <= asked  # the run made the requests this test is about
