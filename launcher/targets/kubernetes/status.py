"""What `dlaunch status` and `dlaunch list` say about a job, from the objects the API returns.

Pure functions of plain dicts (a Job or RayJob, its Pods, their Events, its Kueue Workload):
the job's phase, each pod by its index with its node and restarts, and in one line why a pod
is pending or failing, read from conditions, container states and events (unschedulable, image
pull, failed mount, OOMKilled, configuration errors); why pods cannot be created at all (the
controllers' creation-failure events: quota, ServiceAccount, PriorityClass, Pod Security); why
Kueue holds a job. Also where the job's checkpoints are and the last committed step, read
through the checkpoint storage of `training.checkpoint`.

A pod's index is its completion index (DeepSpeed) or head 0, workers 1.. (Ray). It is not the
torch node rank: torchrun's c10d rendezvous orders nodes by host name, so above 10 nodes pod
index and node rank differ. Hence the INDEX column and `dlaunch logs --index`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass
from typing import Any

from launcher.targets.base import POST_TRAINING_MESSAGE
# checkpoint_info(_for) are used through this module by the backend (and tests/e2e).
from launcher.targets.checkpoints import CheckpointInfo, checkpoint_info, checkpoint_info_for, one_line  # noqa: F401
from launcher.targets.kubernetes.pods import COMPLETION_INDEX_LABEL, QUEUE_LABEL, SPEC_HASH_ANNOTATION
from training.contract import CONFIG_ERROR, POST_TRAINING_FAILED, PREEMPTED

USER_LABEL = "dlaunch.dev/user"
SUBMITTED_BY_ANNOTATION = "dlaunch.dev/submitted-by"
RAY_NODE_TYPE_LABEL = "ray.io/node-type"
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
# Pods of KubeRay's submitter Job (the Ray driver's output) carry the Job controller's job-name label.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
DRIVER = "driver"
# KubeRay's JobDeploymentStatus values that mean "not started yet" (ray-operator/apis/ray/v1/rayjob_types.go).
RAY_STARTING = {"": "waiting for KubeRay to start it", "Initializing": "starting the Ray cluster",
                "Waiting": "waiting for the Ray job to be submitted"}
RAY_TERMINAL_JOB_STATUSES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
# Warning events of the controllers that create the job's pods, when creating one fails: the Job
# controller's RealPodControl.createPods (pkg/controller/controller_utils.go, reason FailedCreate)
# and KubeRay's RayCluster and RayJob controllers (utils.FailedToCreate* event types).
CREATE_FAILURE_REASONS = frozenset({"FailedCreate", "FailedToCreateHeadPod", "FailedToCreateWorkerPod",
                                    "FailedToCreateRayJobSubmitter", "FailedToCreateRayCluster"})
# What the admission plugin that refused a pod says, and what the user can do about it.
CREATE_FAILURE_FIXES = (
    ("exceeded quota", "the namespace's ResourceQuota cannot hold the job: ask for more quota, or request fewer "
                       "resources (kubectl describe resourcequota)"),
    ("error looking up service account", "create the ServiceAccount, or fix kubernetes.service_account"),
    ("no PriorityClass with name", "ask a cluster admin to create the PriorityClass, or fix "
                                   "kubernetes.priority_class"),
    ("violates PodSecurity", "the namespace's Pod Security level refuses these pods: drop kubernetes.host_network, "
                             "or use a namespace that allows them"),
)
IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
CONFIG_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})
# "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: ..."
NODES_AVAILABLE = re.compile(r"^(\d+)/(\d+) nodes are available: (.*?)\.?(?:\s+preemption:.*)?$", re.DOTALL)

Obj = dict[str, Any]


# ----- the job ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobState:
    """The job's phase (Pending, Queued, Running, Succeeded, Failed, Deleting) and why."""

    phase: str
    reason: str = ""

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    def describe(self) -> str:
        return f"{self.phase} ({self.reason})" if self.reason else self.phase


def _true_conditions(obj: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in obj.get("status", {}).get("conditions") or [] if c.get("status") == "True"}


def job_state(obj: Obj) -> JobState:
    """The phase of a dlaunch job from its main object (an Indexed Job or a RayJob)."""
    if obj.get("metadata", {}).get("deletionTimestamp"):
        return JobState("Deleting")
    if obj.get("kind") == "RayJob":
        return ray_job_state(obj)
    return indexed_job_state(obj)


def indexed_job_state(job: Obj) -> JobState:
    """The Job's phase. `FailureTarget` and `SuccessCriteriaMet` are already the outcome: the Job
    controller sets them first and turns them into `Failed` / `Complete` once the remaining pods
    have terminated (kubernetes/kubernetes pkg/controller/job/job_controller.go syncJob,
    newFailedConditionForFailureTarget), which can take the whole grace period."""
    conditions, status = _true_conditions(job), job.get("status", {})
    failed = conditions.get("Failed") or conditions.get("FailureTarget")
    if failed is not None:
        return JobState("Failed", ": ".join(p for p in (failed.get("reason"), one_line(failed.get("message"))) if p))
    if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
        return JobState("Succeeded")
    if "Suspended" in conditions or job.get("spec", {}).get("suspend"):
        queued = QUEUE_LABEL in (job.get("metadata", {}).get("labels") or {})
        return JobState("Queued", "waiting for Kueue to admit it" if queued else "suspended")
    ready, nodes = status.get("ready") or 0, node_count(job)
    if ready:
        return JobState("Running", f"{ready}/{nodes} pods ready")
    return JobState("Pending", f"0/{nodes} pods ready")


def ray_job_state(rayjob: Obj) -> JobState:
    """The phase from KubeRay's `jobDeploymentStatus` first, then the Ray job's own `jobStatus`.

    Every JobDeploymentStatus of ray-operator/apis/ray/v1/rayjob_types.go is mapped, as the
    RayJob controller (rayjob_controller.go, `Reconcile`) moves between them: Complete and Failed
    are final; `Retrying` follows a failure within `backoffLimit` (checkBackoffLimitAndUpdateStatusIfNeeded)
    and goes back to New, so it is not a failure; ValidationFailed is final (KubeRay never
    reconciles the RayJob again), so it is a failure, not a pending job.
    """
    status = rayjob.get("status") or {}
    deployment, job = status.get("jobDeploymentStatus") or "", status.get("jobStatus") or ""
    why = ": ".join(p for p in (status.get("reason"), one_line(status.get("message"))) if p)
    if deployment == "Complete":
        return JobState("Succeeded") if job == "SUCCEEDED" else JobState("Failed", why or f"Ray job {job.lower()}")
    if deployment in ("Failed", "ValidationFailed"):
        return JobState("Failed", why or f"KubeRay: {deployment}")
    if deployment == "Retrying":
        return JobState("Retrying", retry_reason(rayjob, why))
    if deployment in ("Suspending", "Suspended") or (rayjob.get("spec") or {}).get("suspend"):
        queued = QUEUE_LABEL in (rayjob.get("metadata", {}).get("labels") or {})
        return JobState("Queued", "waiting for Kueue to admit it" if queued else "suspended")
    if deployment == "Running":
        if job == "RUNNING":
            return JobState("Running")
        if job in RAY_TERMINAL_JOB_STATUSES:
            return JobState("Running", f"Ray job {job.lower()}; waiting for the driver to finish")
        return JobState("Pending", "the Ray job is submitted and waiting to start")
    return JobState("Pending", RAY_STARTING.get(deployment, f"KubeRay reports {deployment}"))


def retry_reason(rayjob: Obj, why: str) -> str:
    """`attempt 1 of 3 failed (AppFailed: ...); KubeRay starts it again` (status.failed counts the failures)."""
    failed = int((rayjob.get("status") or {}).get("failed") or 0)
    limit = (rayjob.get("spec") or {}).get("backoffLimit")
    attempts = f" of {int(limit) + 1}" if limit is not None else ""
    cause = f" ({why})" if why else ""
    return f"attempt {failed}{attempts} failed{cause}; KubeRay starts it again"


def node_count(obj: Obj) -> int:
    """Nodes (pods with an index) of the job: the Indexed Job's completions, or 1 head + the Ray workers."""
    spec = obj.get("spec", {})
    if obj.get("kind") == "RayJob":
        groups = spec.get("rayClusterSpec", {}).get("workerGroupSpecs") or []
        return 1 + sum(int(group.get("replicas") or 0) for group in groups)
    return int(spec.get("completions") or spec.get("parallelism") or 1)


def pod_templates(obj: Obj) -> list[Obj]:
    """The pod templates of a Job, or of a RayJob's head and worker groups."""
    spec = obj.get("spec") or {}
    if obj.get("kind") != "RayJob":
        return [spec["template"]] if spec.get("template") else []
    cluster = spec.get("rayClusterSpec") or {}
    groups = [cluster.get("headGroupSpec") or {}, *(cluster.get("workerGroupSpecs") or [])]
    return [group["template"] for group in groups if group.get("template")]


def priority_class_of(obj: Obj) -> str | None:
    """The job's PriorityClass: what Kueue reads from its pod sets (jobframework extractPriorityFromPodSets)."""
    return next((t["spec"]["priorityClassName"] for t in pod_templates(obj)
                 if (t.get("spec") or {}).get("priorityClassName")), None)


def backend_of(obj: Obj) -> str:
    return "ray" if obj.get("kind") == "RayJob" else "deepspeed"


# ----- pods ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PodRow:
    """One pod index's newest pod (`restarts` counts container restarts and pod replacements).

    `role` is `node` (an Indexed Job's pod), `head`, `worker` or `driver` (KubeRay's submitter).
    """

    index: int | None
    role: str
    name: str
    phase: str
    node: str
    restarts: int
    reason: str


def pod_role(pod: Obj) -> str:
    """What a pod of the job is: node (DeepSpeed), head, worker, driver (Ray), or '' if unknown."""
    labels = pod["metadata"].get("labels") or {}
    if _completion_index(pod) is not None:
        return "node"
    if labels.get(RAY_NODE_TYPE_LABEL) in ("head", "worker"):
        return str(labels[RAY_NODE_TYPE_LABEL])
    return DRIVER if JOB_NAME_LABEL in labels or "job-name" in labels else ""


def _completion_index(pod: Obj) -> int | None:
    meta = pod["metadata"]
    index = (meta.get("labels") or {}).get(COMPLETION_INDEX_LABEL) or (meta.get("annotations") or {}).get(
        COMPLETION_INDEX_LABEL)
    return int(index) if index is not None and str(index).isdigit() else None


def pod_keys(pods: list[Obj]) -> dict[str, int | str]:
    """Each pod's group: its index (completion index; Ray head 0, workers 1.. by name), `driver`, or its name."""
    keys: dict[str, int | str] = {}
    workers = sorted(p["metadata"]["name"] for p in pods if pod_role(p) == "worker")
    for pod in pods:
        name, role = pod["metadata"]["name"], pod_role(pod)
        index = _completion_index(pod)
        if index is not None:
            keys[name] = index
        elif role == "head":
            keys[name] = 0
        elif role == "worker":
            keys[name] = workers.index(name) + 1
        else:
            keys[name] = DRIVER if role == DRIVER else name
    return keys


def _created(pod: Obj) -> tuple[str, str]:
    return pod["metadata"].get("creationTimestamp") or "", pod["metadata"]["name"]


def pods_by_index(pods: list[Obj]) -> dict[int | str, list[Obj]]:
    """Each pod index's pods (and the driver's), oldest first: replacements of a failed pod come later."""
    keys = pod_keys(pods)
    grouped: dict[int | str, list[Obj]] = {}
    for pod in sorted(pods, key=_created):
        grouped.setdefault(keys[pod["metadata"]["name"]], []).append(pod)
    return grouped


def container_statuses(pod: Obj) -> list[Obj]:
    status = pod.get("status", {})
    return (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])


def restarts_of(pod: Obj) -> int:
    return sum(int(s.get("restartCount") or 0) for s in container_statuses(pod))


def pod_phase(pod: Obj) -> str:
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    return pod.get("status", {}).get("phase") or "Pending"


def terminated_reason(terminated: Obj) -> str:
    """Why a container run ended, with the remedy for the common cases."""
    code, reason = terminated.get("exitCode"), terminated.get("reason") or "Error"
    if reason == "OOMKilled":
        return f"OOMKilled (exit code {code}): the container needs more memory than resources.memory"
    if code == CONFIG_ERROR:
        return f"exit code {code}: configuration error (see dlaunch logs)"
    if code == PREEMPTED:
        return f"exit code {code}: stopped after checkpointing (preempted)"
    if code == POST_TRAINING_FAILED:
        return f"exit code {code}: {POST_TRAINING_MESSAGE}"
    return f"{reason} (exit code {code})"


def container_problem(status: Obj) -> str:
    """Why one container is not running well, or '' if it is."""
    state, last = status.get("state") or {}, status.get("lastState") or {}
    waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
    reason, message = waiting.get("reason", ""), one_line(waiting.get("message"))
    if reason in IMAGE_PULL_REASONS:
        return f"image pull failed ({reason})" + (f": {message}" if message else "")
    if reason == "CrashLoopBackOff":
        return "CrashLoopBackOff: " + (terminated_reason(last["terminated"]) if "terminated" in last else "restarting")
    if reason in CONFIG_REASONS:
        return f"{reason}: {message}" if message else reason
    if terminated and terminated.get("exitCode") not in (0, None):
        return terminated_reason(terminated)
    if status.get("restartCount") and "terminated" in last:
        return f"restarted after {terminated_reason(last['terminated'])}"
    return ""


def scheduling_reason(condition: Obj) -> str:
    """`PodScheduled=False` in one line: "unschedulable: 0/3 nodes: insufficient nvidia.com/gpu"."""
    if condition.get("reason") == "SchedulingGated":
        return "waiting for its scheduling gates to be removed"
    message = (condition.get("message") or "").strip()
    match = NODES_AVAILABLE.match(message)
    if not match:
        return f"unschedulable: {one_line(message) or condition.get('reason') or 'no reason given'}"
    available, total, parts = match.groups()
    reasons = []
    for part in parts.split(", "):
        count, _, text = part.strip().partition(" ")
        if text.split(" ")[0].istitle():  # "Insufficient nvidia.com/gpu" -> "insufficient nvidia.com/gpu"
            text = text[:1].lower() + text[1:]
        reasons.append(text if count == total else f"{count} {text}")
    return f"unschedulable: {available}/{total} nodes: {', '.join(reasons)}"


def _event_time(event: Obj) -> str:
    return event.get("lastTimestamp") or event.get("eventTime") or event["metadata"].get("creationTimestamp", "")


def latest_warning(pod: Obj, events: list[Obj]) -> Obj | None:
    """The pod's newest Warning event."""
    name = pod["metadata"]["name"]
    mine = [e for e in events if e.get("type") == "Warning" and (e.get("involvedObject") or {}).get("kind") == "Pod"
            and (e.get("involvedObject") or {}).get("name") == name]
    return max(mine, key=_event_time) if mine else None


def event_reason(event: Obj) -> str:
    reason, message = event.get("reason", ""), one_line(event.get("message"))
    if reason == "FailedMount":
        return f"failed mount: {message}"
    return f"{reason}: {message}" if message else reason


def pod_reason(pod: Obj, events: list[Obj]) -> str:
    """Why a pod is pending or failing, in one line ('' when it is fine)."""
    phase = pod.get("status", {}).get("phase") or "Pending"
    if phase == "Succeeded":
        return ""
    for status in container_statuses(pod):
        if problem := container_problem(status):
            return problem
    scheduled = next((c for c in pod.get("status", {}).get("conditions") or [] if c.get("type") == "PodScheduled"),
                     None)
    if scheduled is not None and scheduled.get("status") == "False":
        return scheduling_reason(scheduled)
    warning = latest_warning(pod, events)
    if warning is not None and phase != "Running":
        return event_reason(warning)
    waiting = next(((s.get("state") or {}).get("waiting", {}).get("reason") for s in container_statuses(pod)
                    if (s.get("state") or {}).get("waiting")), None)
    if waiting:
        return waiting
    if phase == "Failed":
        status = pod.get("status", {})
        return ": ".join(p for p in (status.get("reason"), one_line(status.get("message"))) if p) or "failed"
    return ""


def needs_events(pods: list[Obj]) -> bool:
    """Events only explain pods still being set up; fetch them only then."""
    return any(pod_phase(p) == "Pending" and not any(container_problem(s) for s in container_statuses(p))
               for p in pods)


def pods_missing(obj: Obj, pods: list[Obj]) -> bool:
    """A started, unfinished job has fewer node pods than nodes: a controller may be failing to create them."""
    state = job_state(obj)
    if state.terminal or state.phase in ("Queued", "Deleting"):
        return False
    indexes = {key for key in pod_keys(pods).values() if isinstance(key, int)}
    return len(indexes) < node_count(obj)


def event_owners(obj: Obj) -> set[tuple[str, str]]:
    """(kind, name) of the objects whose controllers create the job's pods: the Job, or for Ray the
    RayJob, KubeRay's submitter Job (named like the RayJob) and the RayCluster."""
    name = obj["metadata"]["name"]
    if obj.get("kind") != "RayJob":
        return {("Job", name)}
    owners = {("RayJob", name), ("Job", name)}
    cluster = (obj.get("status") or {}).get("rayClusterName")
    return owners | ({("RayCluster", cluster)} if cluster else set())


def creation_problem(events: list[Obj], owners: set[tuple[str, str]]) -> str:
    """Why pods cannot be created, from the newest creation-failure event on `owners` ('' if none)."""
    def about(event: Obj) -> tuple[str, str]:
        involved = event.get("involvedObject") or {}
        return involved.get("kind", ""), involved.get("name", "")
    failures = [e for e in events if e.get("reason") in CREATE_FAILURE_REASONS and about(e) in owners]
    if not failures:
        return ""
    message = (max(failures, key=_event_time).get("message") or "").strip()
    fix = next((fix for marker, fix in CREATE_FAILURE_FIXES if marker in message), "")
    return f"pods cannot be created: {one_line(message)}" + (f"; {fix}" if fix else "")


def queue_problem(workload: Obj | None, missing_priority_class: str | None) -> str:
    """Why Kueue holds a queued job: no Workload (and why), or its QuotaReserved/Evicted condition."""
    if workload is None:
        if missing_priority_class:
            return (f"Kueue cannot create a Workload for it: PriorityClass '{missing_priority_class}' does not exist; "
                    "ask a cluster admin to create it, or fix kubernetes.priority_class and submit with --replace")
        return "Kueue has not created a Workload for it yet"
    conditions = {c.get("type"): c for c in (workload.get("status") or {}).get("conditions") or []}
    for kind, status, words in (("Evicted", "True", "Kueue evicted it"), ("QuotaReserved", "False", "Kueue")):
        condition = conditions.get(kind)
        if condition is not None and condition.get("status") == status:
            detail = ": ".join(p for p in (condition.get("reason"), one_line(condition.get("message"))) if p)
            return f"{words}: {detail}" if detail else words
    return ""


def pod_row(key: int | str, pod: Obj, restarts: int, events: list[Obj]) -> PodRow:
    return PodRow(key if isinstance(key, int) else None, pod_role(pod), pod["metadata"]["name"], pod_phase(pod),
                  pod.get("spec", {}).get("nodeName") or "-", restarts, pod_reason(pod, events))


def pod_rows(pods: list[Obj], events: list[Obj]) -> list[PodRow]:
    """One row per pod index (its newest pod), in index order; then the driver, then pods of no known role."""
    rows = [pod_row(key, group[-1], restarts_of(group[-1]) + len(group) - 1, events)
            for key, group in pods_by_index(pods).items()]
    return sorted(rows, key=lambda row: (row.index is None, row.role != DRIVER, row.index or 0, row.name))


# ----- the whole picture ------------------------------------------------------------------------
@dataclass(frozen=True)
class JobStatus:
    name: str
    namespace: str
    backend: str
    state: JobState
    pods: list[PodRow]
    checkpoint: CheckpointInfo
    spec_hash: str | None
    problem: str = ""

    def headline(self) -> str:
        """One line: the job, its phase, why it cannot go on (if known), and the first pod problem if
        it is not finished."""
        line = f"job {self.name} ({self.backend}, namespace {self.namespace}): {self.state.describe()}"
        if self.problem and not self.state.terminal:
            line += f"; {self.problem}"
        troubled = [row for row in self.pods if row.reason]
        if troubled and not self.state.terminal:
            first = troubled[0]
            who = f"pod {first.index}" if first.index is not None else first.name
            more = f" (and {len(troubled) - 1} more pods)" if len(troubled) > 1 else ""
            line += f"; {who}: {first.reason}{more}"
        return line

    def text(self) -> str:
        return format_status(self)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "namespace": self.namespace, "backend": self.backend,
                "phase": self.state.phase, "reason": self.state.reason, "problem": self.problem,
                "spec_hash": self.spec_hash,
                "checkpoint": asdict(self.checkpoint), "pods": [asdict(row) for row in self.pods]}


def job_status(obj: Obj, pods: list[Obj], events: list[Obj], checkpoint: CheckpointInfo,
               problem: str = "") -> JobStatus:
    meta = obj["metadata"]
    return JobStatus(meta["name"], meta.get("namespace", ""), backend_of(obj), job_state(obj),
                     pod_rows(pods, events), checkpoint, (meta.get("annotations") or {}).get(SPEC_HASH_ANNOTATION),
                     problem)


def table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns, two spaces apart; trailing blanks stripped."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)


def format_status(status: JobStatus) -> str:
    """What `dlaunch status` prints."""
    rows = [[str(r.index) if r.index is not None else (r.role or "-"), r.name, r.phase, r.node, str(r.restarts),
             r.reason] for r in status.pods]
    pods = table(["INDEX", "POD", "PHASE", "NODE", "RESTARTS", "REASON"], rows) if rows else "no pods yet"
    return f"{status.headline()}\ncheckpoints: {status.checkpoint.summary()}\n{pods}"


# ----- lists ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobSummary:
    name: str
    backend: str
    phase: str
    reason: str
    nodes: int
    created: str
    submitted_by: str


def job_summary(obj: Obj) -> JobSummary:
    meta, state = obj["metadata"], job_state(obj)
    return JobSummary(meta["name"], backend_of(obj), state.phase, state.reason, node_count(obj),
                      meta.get("creationTimestamp", ""), (meta.get("annotations") or {}).get(SUBMITTED_BY_ANNOTATION,
                                                                                             ""))


def age(timestamp: str, now: dt.datetime | None = None) -> str:
    """`2024-05-01T10:00:00Z` -> `3h` (like kubectl's AGE column)."""
    try:
        then = dt.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return "?"
    seconds = int(((now or dt.datetime.now(dt.timezone.utc)) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def format_job_list(jobs: list[JobSummary], namespace: str) -> str:
    """What `dlaunch list` prints."""
    if not jobs:
        return f"no dlaunch jobs in namespace {namespace}"
    rows = [[j.name, j.backend, j.phase, str(j.nodes), age(j.created), j.submitted_by] for j in jobs]
    return table(["NAME", "BACKEND", "PHASE", "NODES", "AGE", "SUBMITTED BY"], rows)
