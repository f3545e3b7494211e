"""Play the cluster's controllers against the fake API server: nodes, secrets, and a job's pods.

The fake has no Job controller, scheduler, kubelet or KubeRay. `JobSim` does their part for one
dlaunch Indexed Job, and `RaySim` KubeRay's for one RayJob, by writing realistic Pod objects
(owned by their controller's object, labelled as the controller labels them), container states,
Events, status and container logs into the fake's store.

Pods are created through `admit_pod`, the API server's admission of a pod as far as dlaunch's
jobs meet it: a refused pod becomes the creating controller's Warning event, as on a real
cluster, where nobody sees it unless they look (see `admit_pod` and `JobSim.start`).

`JobSim.fail` and `JobSim.succeed` end a pod and let the Job controller decide, as the real one
does, from the Job's stored spec (`jobs.py` cites the upstream functions): the pod failure
policy (FailJob ends the Job with reason PodFailurePolicy, Ignore replaces the pod without
counting), the per-index limits (`backoffLimitPerIndex`, `maxFailedIndexes`: reason
MaxFailedIndexesExceeded), the job-wide `backoffLimit`, and the two-step end (FailureTarget
while the other pods terminate, then Failed).
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from typing import Any

from launcher.quantity import parse_quantity
from launcher.targets.kubernetes.pods import COMPLETION_INDEX_LABEL
from tests.fake_kube.jobs import (
    FAILURE_COUNT_ANNOTATION, IGNORED_FAILURE_COUNT_ANNOTATION, default_job, finished_condition, index_failed,
    indexes_text, match_pod_failure_policy, parse_indexes, replacement_backoff_s, replacement_counts,
)
from tests.fake_kube.server import FakeKubeApi

Obj = dict[str, Any]
POD_SECURITY_LABEL = "pod-security.kubernetes.io/enforce"
# What a pod counts against a ResourceQuota key (kubernetes pkg/quota/v1/evaluator/core/pods.go).
QUOTA_SOURCES = {"cpu": ("requests", "cpu"), "memory": ("requests", "memory"), "requests.cpu": ("requests", "cpu"),
                 "requests.memory": ("requests", "memory"), "limits.cpu": ("limits", "cpu"),
                 "limits.memory": ("limits", "memory"), "requests.nvidia.com/gpu": ("requests", "nvidia.com/gpu")}


def node(name: str, *, gpus: int = 0, cpu: str = "16", memory: str = "64Gi",
         taints: tuple[Obj, ...] = (), labels: dict[str, str] | None = None) -> Obj:
    allocatable = {"cpu": cpu, "memory": memory, "pods": "110", **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": {"taints": list(taints)} if taints else {},
            "status": {"allocatable": allocatable, "capacity": dict(allocatable)}}


def secret(name: str, namespace: str, keys: tuple[str, ...]) -> Obj:
    data = {key: base64.b64encode(b"not-a-real-secret").decode() for key in keys}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque", "data": data}


def local_queue(name: str, namespace: str, version: str = "v1beta2") -> Obj:
    return {"apiVersion": f"kueue.x-k8s.io/{version}", "kind": "LocalQueue",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"clusterQueue": "cluster-queue"}}


def service_account(name: str, namespace: str) -> Obj:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}


def priority_class(name: str, value: int = 1000) -> Obj:
    return {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
            "value": value}


def resource_quota(name: str, namespace: str, hard: dict[str, str], used: dict[str, str] | None = None) -> Obj:
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name, "namespace": namespace},
            "spec": {"hard": hard}, "status": {"hard": hard, "used": used or {key: "0" for key in hard}}}


def workload(owner: Obj, version: str = "v1beta2", conditions: list[Obj] | None = None) -> Obj:
    """The Workload Kueue creates for a job (jobframework ConstructWorkload): owned by it, labelled with its uid."""
    meta = owner["metadata"]
    return {"apiVersion": f"kueue.x-k8s.io/{version}", "kind": "Workload",
            "metadata": {"name": f"{owner['kind'].lower()}-{meta['name']}-{meta['uid'][:5]}",
                         "namespace": meta["namespace"], "labels": {"kueue.x-k8s.io/job-uid": meta["uid"]},
                         "ownerReferences": [controller_ref(owner)]},
            "spec": {"queueName": (meta.get("labels") or {}).get("kueue.x-k8s.io/queue-name", "")},
            "status": {"conditions": conditions or []}}


def controller_ref(owner: Obj) -> Obj:
    """What controller-runtime's SetControllerReference (and the Job controller) put on what they create."""
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def warning_event(fake: FakeKubeApi, about: Obj, reason: str, message: str, component: str) -> Obj:
    """A Warning event on `about`, as a controller's event recorder writes it."""
    meta = about["metadata"]
    return fake.add({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": about["apiVersion"], "kind": about["kind"], "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta["uid"]},
        "reason": reason, "message": message, "type": "Warning", "count": 1, "source": {"component": component},
        "lastTimestamp": now(),
    })


# ----- pod admission ------------------------------------------------------------------------------
def admit_pod(fake: FakeKubeApi, namespace: str, name: str, spec: Obj) -> str | None:
    """None if the API server would create this pod, else its 403 message, in the admission plugins'
    order and words (kubernetes plugin/pkg/admission): serviceaccount ("error looking up service
    account %s/%s: %v"), priority ("no PriorityClass with name %v was found"), PodSecurity
    (pod-security-admission: "violates PodSecurity %q: %s", host namespaces and privileged
    containers only), then ResourceQuota ("exceeded quota: %s, requested: %s, used: %s, limited:
    %s", unscoped quotas; usage summed over the namespace's pods that have not ended)."""
    account = spec.get("serviceAccountName") or "default"
    if account != "default" and fake.get("v1", "ServiceAccount", account, namespace) is None:
        return forbidden(name, f'error looking up service account {namespace}/{account}: serviceaccount "{account}" '
                               "not found")
    wanted = spec.get("priorityClassName")
    if wanted and fake.get("scheduling.k8s.io/v1", "PriorityClass", wanted) is None:
        return forbidden(name, f"no PriorityClass with name {wanted} was found")
    refusal = pod_security_refusal(fake, namespace, spec)
    if refusal is not None:
        return forbidden(name, refusal)
    for quota in fake.objects("v1", "ResourceQuota", namespace):
        if (refusal := quota_refusal(fake, namespace, quota, spec)) is not None:
            return forbidden(name, refusal)
    return None


def forbidden(name: str, detail: str) -> str:
    return f'pods "{name}" is forbidden: {detail}'


def pod_security_refusal(fake: FakeKubeApi, namespace: str, spec: Obj) -> str | None:
    labels = (fake.get("v1", "Namespace", namespace) or {}).get("metadata", {}).get("labels") or {}
    level = labels.get(POD_SECURITY_LABEL, "privileged")
    if level == "privileged":
        return None
    hosts = [f"{key}=true" for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key)]
    privileged = [c["name"] for c in spec.get("containers", []) if (c.get("securityContext") or {}).get("privileged")]
    details = ([f"host namespaces ({', '.join(hosts)})"] if hosts else []) + (
        [f'privileged (container "{privileged[0]}" must not set securityContext.privileged=true)']
        if privileged else [])
    return f'violates PodSecurity "{level}:latest": {"; ".join(details)}' if details else None


def pod_quota_usage(spec: Obj) -> dict[str, float]:
    usage = {"pods": 1.0, "count/pods": 1.0}
    for key, (section, resource) in QUOTA_SOURCES.items():
        usage[key] = sum(parse_quantity(((c.get("resources") or {}).get(section) or {}).get(resource, "0"))
                         for c in spec.get("containers", []))
    return usage


def quota_refusal(fake: FakeKubeApi, namespace: str, quota: Obj, spec: Obj) -> str | None:
    hard = quota.get("spec", {}).get("hard") or {}
    if quota.get("spec", {}).get("scopes") or quota.get("spec", {}).get("scopeSelector"):
        return None
    live = [p for p in fake.objects("v1", "Pod", namespace)
            if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    requested = pod_quota_usage(spec)
    for key, limit in hard.items():
        if key not in requested:
            continue
        used = sum(pod_quota_usage(p["spec"]).get(key, 0.0) for p in live)
        if used + requested[key] > parse_quantity(limit):
            return (f"exceeded quota: {quota['metadata']['name']}, requested: {key}={requested[key]:g}, used: "
                    f"{key}={used:g}, limited: {key}={limit}")
    return None


def running() -> Obj:
    return {"running": {"startedAt": "2025-01-01T00:00:00Z"}}


def waiting(reason: str, message: str = "") -> Obj:
    return {"waiting": {"reason": reason, **({"message": message} if message else {})}}


def terminated(exit_code: int, reason: str = "Error") -> Obj:
    return {"terminated": {"exitCode": exit_code, "reason": reason, "startedAt": "2025-01-01T00:00:00Z",
                           "finishedAt": "2025-01-01T00:10:00Z"}}


def unschedulable(message: str) -> list[Obj]:
    return [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]


# What the Job controller reports once every index succeeded (job_controller.go newSuccessCondition).
COMPLETIONS_REACHED = ("CompletionsReached", "Reached expected number of succeeded pods")


def condition(kind: str, reason: str, message: str) -> Obj:
    return {"type": kind, "status": "True", "reason": reason, "message": message, "lastProbeTime": now(),
            "lastTransitionTime": now()}


class JobSim:
    """The Job controller and kubelet for one dlaunch Indexed Job in the fake.

    `pod`, `set_status` and `finish` write what a test scripts; `fail`, `succeed` and `settle`
    play the controller's decisions (see the module docstring).
    """

    def __init__(self, fake: FakeKubeApi, namespace: str, name: str) -> None:
        self.fake, self.namespace, self.name = fake, namespace, name
        self.generation: dict[int, int] = {}
        # (counted, ignored) failures of each index so far: the annotations on its next pod.
        self.failure_counts: dict[int, tuple[int, int]] = {}
        # How long the controller held back each index's latest replacement, in seconds.
        self.replacement_delays: dict[int, int] = {}

    def job(self) -> Obj:
        found = self.fake.get("batch/v1", "Job", self.name, self.namespace)
        assert found is not None, f"job {self.namespace}/{self.name} was not created"
        return found

    def wait_submitted(self, timeout: float = 10.0) -> Obj:
        return self.fake.wait_for(lambda: self.fake.get("batch/v1", "Job", self.name, self.namespace), timeout)

    def pod_name(self, index: int) -> str:
        return f"{self.name}-{index}-g{self.generation.get(index, 0)}"

    def pod(self, index: int, *, phase: str = "Running", state: Obj | None = None, restarts: int = 0,
            last_state: Obj | None = None, node_name: str | None = "node-1", conditions: list[Obj] | None = None,
            replace: bool = False) -> Obj:
        """Create or update rank `index`'s pod; `replace` makes a new pod, as after a failure."""
        if replace:
            self.generation[index] = self.generation.get(index, 0) + 1
        job = self.job()
        template = job["spec"]["template"]
        labels = {**template["metadata"]["labels"], COMPLETION_INDEX_LABEL: str(index), "job-name": self.name,
                  "batch.kubernetes.io/controller-uid": job["metadata"]["uid"]}
        container = template["spec"]["containers"][0]
        status = {"name": container["name"], "image": container["image"], "imageID": "", "restartCount": restarts,
                  "ready": phase == "Running", "started": "running" in (state or running()),
                  "state": state or running(), "lastState": last_state or {}}
        spec = {**template["spec"], "hostname": f"{self.name}-{index}"}
        if node_name:
            spec["nodeName"] = node_name
        return self.fake.add({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": self.pod_name(index), "namespace": self.namespace, "labels": labels,
                         "annotations": {COMPLETION_INDEX_LABEL: str(index), **self.count_annotations(job, index)},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": self.name,
                                              "uid": job["metadata"]["uid"], "controller": True}]},
            "spec": spec,
            "status": {"phase": phase, "conditions": conditions or [], "containerStatuses": [status]},
        })

    def count_annotations(self, job: Obj, index: int) -> dict[str, str]:
        """addIndexFailureCountAnnotation: under per-index limits every pod carries its index's failures."""
        if "backoffLimitPerIndex" not in job["spec"]:
            return {}
        counted, ignored = self.failure_counts.get(index, (0, 0))
        return {FAILURE_COUNT_ANNOTATION: str(counted), **({IGNORED_FAILURE_COUNT_ANNOTATION: str(ignored)}
                                                            if ignored else {})}

    def set_status(self, **status: Any) -> Obj:
        job = self.job()
        job["status"] = {**job.get("status", {}), **status}
        return self.fake.add(job)

    # ----- the Job controller's decisions ----------------------------------------------------------
    def job_pods(self) -> list[Obj]:
        return [p for p in self.fake.objects("v1", "Pod", self.namespace)
                if (p["metadata"].get("labels") or {}).get("job-name") == self.name]

    def pod_counts(self) -> dict[str, int]:
        """status.active, ready and terminating (pods being deleted that have not ended)."""
        live = [p for p in self.job_pods() if p["status"].get("phase") not in ("Succeeded", "Failed")]
        active = [p for p in live if not p["metadata"].get("deletionTimestamp")]
        return {"active": len(active), "ready": sum(p["status"].get("phase") == "Running" for p in active),
                "terminating": len(live) - len(active)}

    def end_pod(self, index: int, exit_code: int, disruption: str | None = None) -> Obj:
        """The kubelet ends rank `index`'s container with `exit_code`. A `disruption` (the reason: e.g.
        PreemptionByScheduler, TerminationByKubelet, EvictionByEvictionAPI) first puts the DisruptionTarget
        condition on the pod, as the scheduler, kubelet or eviction API do before killing it."""
        current = self.fake.get("v1", "Pod", self.pod_name(index), self.namespace)
        assert current is not None, f"rank {index} has no pod"
        conditions = [{"type": "Ready", "status": "False", "reason": "PodCompleted" if not exit_code else "PodFailed"}]
        if disruption:
            conditions.append({"type": "DisruptionTarget", "status": "True", "reason": disruption,
                               "message": f"{disruption}: the pod is being stopped"})
        restarts = int((current["status"].get("containerStatuses") or [{}])[0].get("restartCount") or 0)
        return self.pod(index, phase="Failed" if exit_code else "Succeeded", restarts=restarts, conditions=conditions,
                        state=terminated(exit_code, "Error" if exit_code else "Completed"),
                        node_name=current["spec"].get("nodeName"))

    def fail(self, index: int, exit_code: int, *, disruption: str | None = None, settle: bool = True) -> Obj:
        """Rank `index` fails with `exit_code` and the controller acts (syncJob): the Job ends (see
        `end_job`), or the index is lost, or its pod is replaced. Returns the Job."""
        pod = self.end_pod(index, exit_code, disruption)
        job = self.job()
        spec, status = job["spec"], job.get("status") or {}
        message, counted, _ = match_pod_failure_policy(spec.get("podFailurePolicy"), pod)
        per_index = "backoffLimitPerIndex" in spec
        failed_indexes = parse_indexes(status.get("failedIndexes")) | (
            {index} if per_index and index_failed(spec, pod) else set())
        updates: dict[str, Any] = {"failed": int(status.get("failed") or 0) + counted}
        if per_index:
            updates["failedIndexes"] = indexes_text(failed_indexes)
        ending = finished_condition(spec, message, updates["failed"], failed_indexes,
                                    parse_indexes(status.get("completedIndexes")))
        if ending is not None:
            return self.end_job(ending, updates, settle)
        if index not in failed_indexes:
            self.replace(index, spec, pod)
        return self.set_status(**updates, **self.pod_counts())

    def replace(self, index: int, spec: Obj, failed_pod: Obj) -> Obj:
        """The index's next pod, once the failed one has ended (podReplacementPolicy Failed), carrying the
        index's failure counts (getNewIndexFailureCounts). The controller holds it back for
        `replacement_backoff_s` (recorded in `replacement_delays`); the simulation does not wait."""
        if "backoffLimitPerIndex" in spec:
            self.failure_counts[index] = replacement_counts(spec, failed_pod)
            self.replacement_delays[index] = replacement_backoff_s(failed_pod)
        return self.pod(index, replace=True, node_name=failed_pod["spec"].get("nodeName"))

    def succeed(self, index: int) -> Obj:
        """Rank `index` exits 0: its index completes; the Job ends once every index is done (Complete
        after SuccessCriteriaMet, or Failed when some failed). Returns the Job."""
        self.end_pod(index, 0)
        job = self.job()
        spec, status = job["spec"], job.get("status") or {}
        completed = parse_indexes(status.get("completedIndexes")) | {index}
        updates = {"completedIndexes": indexes_text(completed), "succeeded": len(completed)}
        ending = finished_condition(spec, None, int(status.get("failed") or 0),
                                    parse_indexes(status.get("failedIndexes")), completed)
        if ending is not None:
            return self.end_job(ending, updates, settle=True)
        counts = self.pod_counts()
        if len(completed) < int(spec["completions"]) or counts["active"]:
            return self.set_status(**updates, **counts)
        done = [condition("SuccessCriteriaMet", *COMPLETIONS_REACHED), condition("Complete", *COMPLETIONS_REACHED)]
        return self.set_status(**updates, **counts, conditions=[*(status.get("conditions") or []), *done],
                               completionTime=now())

    def end_job(self, ending: tuple[str, str], updates: dict[str, Any], settle: bool) -> Obj:
        """The controller deletes the Job's other pods (deleteActivePods: they terminate within their
        grace period, counted as failed) and records FailureTarget; `settle` lets them finish."""
        grace = self.job()["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        stopping = [p for p in self.job_pods() if p["status"].get("phase") not in ("Succeeded", "Failed")]
        for pod in stopping:
            pod["metadata"].update(deletionTimestamp=now(), deletionGracePeriodSeconds=grace)
            self.fake.add(pod)
        status = self.job().get("status") or {}
        conditions = [*(status.get("conditions") or []), condition("FailureTarget", *ending)]
        updates["failed"] = int(updates.get("failed", status.get("failed") or 0)) + len(stopping)
        self.set_status(**updates, **self.pod_counts(), conditions=conditions)
        return self.settle() if settle else self.job()

    def settle(self) -> Obj:
        """The deleted pods end and leave the API; the controller then turns FailureTarget into Failed
        (enactJobFinished) and records a Warning event with its reason (recordJobFinished)."""
        for pod in self.job_pods():
            if pod["metadata"].get("deletionTimestamp"):
                self.fake.remove("v1", "Pod", pod["metadata"]["name"], self.namespace)
        job = self.job()
        conditions = job.get("status", {}).get("conditions") or []
        target = next(c for c in conditions if c["type"] == "FailureTarget")
        self.set_status(**self.pod_counts(), conditions=[*conditions, condition("Failed", target["reason"],
                                                                                target["message"])])
        warning_event(self.fake, job, target["reason"], target["message"], "job-controller")
        return self.job()

    def start(self) -> bool:
        """Create every index's pod and run it, the Job counting them ready; False if admission refused one.

        A refused pod is what the Job controller's RealPodControl.createPods (pkg/controller/
        controller_utils.go) makes of it: a Warning event, reason FailedCreate, "Error creating: %v",
        on the Job; it retries later, so the Job just stays without pods.
        """
        job = self.job()
        nodes = job["spec"]["completions"]
        for index in range(nodes):
            refusal = admit_pod(self.fake, self.namespace, f"{self.name}-{index}-", job["spec"]["template"]["spec"])
            if refusal is not None:
                warning_event(self.fake, job, "FailedCreate", f"Error creating: {refusal}", "job-controller")
                return False
            self.pod(index, node_name=f"node-{index}")
        self.set_status(active=nodes, ready=nodes)
        return True

    def expire_ttl(self) -> None:
        """The TTL-after-finished controller deletes the finished Job (pkg/controller/ttlafterfinished,
        `processJob`: Foreground propagation); the garbage collector takes what the Job owns."""
        self.fake.delete("batch/v1", "Job", self.name, self.namespace, policy="Foreground")

    def log(self, index: int, *lines: str) -> None:
        self.fake.append_log(self.namespace, self.pod_name(index), *lines)

    def finish(self, succeeded: bool, reason: str = "BackoffLimitExceeded",
               message: str = "Job has reached the specified backoff limit") -> None:
        """A scripted end: every pod terminated, then the Job's Complete (or Failed) condition with the
        reason given. The default reason is what a Job without per-index limits gets; what the
        controller decides for the Job's own spec comes from `fail` and `succeed`."""
        nodes = self.job()["spec"]["completions"]
        for index in range(nodes):
            code = 0 if succeeded else 1
            self.pod(index, phase="Succeeded" if succeeded else "Failed",
                     state=terminated(code, "Completed" if succeeded else "Error"))
        condition = {"type": "Complete", "status": "True"} if succeeded else {
            "type": "Failed", "status": "True", "reason": reason, "message": message}
        self.set_status(active=0, ready=0, conditions=[condition], **({"succeeded": nodes} if succeeded else {}))

    def event(self, index: int, reason: str, message: str) -> Obj:
        pod = self.pod_name(index)
        return self.fake.add({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{pod}.{reason.lower()}", "namespace": self.namespace},
            "involvedObject": {"kind": "Pod", "name": pod, "namespace": self.namespace},
            "reason": reason, "message": message, "type": "Warning", "count": 1,
            "lastTimestamp": "2025-01-01T00:00:05Z",
        })


class RaySim:
    """KubeRay's RayJob and RayCluster controllers for one dlaunch RayJob in K8sJobMode.

    What ray-operator/controllers/ray/rayjob_controller.go does: the RayCluster, owned by the
    RayJob and labelled with its labels (constructRayClusterForRayJob); head and worker pods owned
    by the RayCluster, refused ones reported as FailedToCreateHeadPod / FailedToCreateWorkerPod
    events on it (raycluster_controller.go); then the submitter: a batch/v1 Job with the RayJob's own
    name, KubeRay's labels only, owned by the RayJob, whose pod template is the RayJob's
    submitterPodTemplate plus KubeRay's labels (createK8sJobIfNeed, getSubmitterTemplate,
    createNewK8sJob). Its pod, made by the Job controller, runs `ray job logs --follow`: the driver.
    """

    def __init__(self, fake: FakeKubeApi, namespace: str, name: str) -> None:
        self.fake, self.namespace, self.name = fake, namespace, name
        self.cluster_name = f"{name}-raycluster"

    def rayjob(self) -> Obj:
        found = self.fake.get("ray.io/v1", "RayJob", self.name, self.namespace)
        assert found is not None, f"rayjob {self.namespace}/{self.name} was not created"
        return found

    def set_status(self, **status: Any) -> Obj:
        rayjob = self.rayjob()
        rayjob["status"] = {**rayjob.get("status", {}), **status}
        return self.fake.add(rayjob)

    def start(self) -> bool:
        """The RayCluster, its pods, the submitter Job and its pod; the RayJob Running. False if a pod
        was refused (the RayJob then stays Initializing)."""
        rayjob = self.rayjob()
        self.set_status(jobDeploymentStatus="Initializing", rayClusterName=self.cluster_name)
        cluster = self.fake.add({
            "apiVersion": "ray.io/v1", "kind": "RayCluster",
            "metadata": {"name": self.cluster_name, "namespace": self.namespace,
                         "labels": {**rayjob["metadata"].get("labels", {}), **self.kuberay_labels()},
                         "ownerReferences": [controller_ref(rayjob)]},
            "spec": rayjob["spec"]["rayClusterSpec"]})
        if not self.start_ray_pods(cluster):
            return False
        submitter = self.submitter_job(rayjob)
        refusal = admit_pod(self.fake, self.namespace, f"{self.name}-", submitter["spec"]["template"]["spec"])
        if refusal is not None:
            warning_event(self.fake, submitter, "FailedCreate", f"Error creating: {refusal}", "job-controller")
            return False
        self.driver_pod(submitter)
        self.set_status(jobDeploymentStatus="Running", jobStatus="RUNNING", jobId=f"{self.name}-id")
        return True

    def kuberay_labels(self) -> dict[str, str]:
        return {"ray.io/originated-from-cr-name": self.name, "ray.io/originated-from-crd": "RayJob",
                "app.kubernetes.io/created-by": "kuberay-operator"}

    def start_ray_pods(self, cluster: Obj) -> bool:
        workers = cluster["spec"]["workerGroupSpecs"]
        groups = [("head", "headgroup", cluster["spec"]["headGroupSpec"], 1)] + [
            ("worker", group["groupName"], group, int(group["replicas"])) for group in workers]
        for node_type, group_name, group, replicas in groups:
            for replica in range(replicas):
                name = f"{self.cluster_name}-head" if node_type == "head" else \
                    f"{self.cluster_name}-{group_name}-worker-{replica}"
                refusal = admit_pod(self.fake, self.namespace, name, group["template"]["spec"])
                if refusal is not None:
                    reason = "FailedToCreateHeadPod" if node_type == "head" else "FailedToCreateWorkerPod"
                    warning_event(self.fake, cluster, reason, f"Failed to create {node_type} Pod {self.namespace}/"
                                                              f"{name}, {refusal}", "raycluster-controller")
                    return False
                labels = {"ray.io/node-type": node_type, "ray.io/group": group_name,
                          "ray.io/cluster": self.cluster_name}
                self.add_pod(name, group["template"], labels, cluster)
        return True

    def submitter_job(self, rayjob: Obj) -> Obj:
        """KubeRay's submitter Job (rayjob_controller.go createNewK8sJob): `backoffLimit` 2 unless the
        RayJob's `submitterConfig.backoffLimit` says otherwise, defaulted by the API server as any Job."""
        template = rayjob["spec"]["submitterPodTemplate"]
        template = {**template, "metadata": {"labels": {**template["metadata"].get("labels", {}),
                                                        **self.kuberay_labels()}}}
        limit = (rayjob["spec"].get("submitterConfig") or {}).get("backoffLimit", 2)
        return self.fake.add(default_job({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": self.kuberay_labels(),
                         "ownerReferences": [controller_ref(rayjob)]},
            "spec": {"backoffLimit": limit, "template": template}}))

    def driver_pod(self, submitter: Obj) -> Obj:
        labels = {"batch.kubernetes.io/job-name": self.name, "job-name": self.name,
                  "batch.kubernetes.io/controller-uid": submitter["metadata"]["uid"]}
        return self.add_pod(f"{self.name}-driver", submitter["spec"]["template"], labels, submitter)

    def add_pod(self, name: str, template: Obj, labels: dict[str, str], owner: Obj, phase: str = "Running",
                state: Obj | None = None) -> Obj:
        container = template["spec"]["containers"][0]
        status = {"name": container["name"], "image": container["image"], "restartCount": 0, "ready": True,
                  "state": state or running(), "lastState": {}}
        return self.fake.add({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace,
                         "labels": {**template["metadata"].get("labels", {}), **labels},
                         "ownerReferences": [controller_ref(owner)]},
            "spec": {**template["spec"], "nodeName": "node-1"},
            "status": {"phase": phase, "containerStatuses": [status]}})

    def log_driver(self, *lines: str) -> None:
        self.fake.append_log(self.namespace, f"{self.name}-driver", *lines)

    def log_node(self, index: int, *lines: str) -> None:
        name = f"{self.cluster_name}-head" if index == 0 else f"{self.cluster_name}-workers-worker-{index - 1}"
        self.fake.append_log(self.namespace, name, *lines)
