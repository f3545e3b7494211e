"""Kubernetes objects for a job: a pure function `render(spec, plan) -> list[dict]`.

DeepSpeed: a ConfigMap with the resolved job JSON, a headless Service giving pod 0 a stable
DNS name, and an Indexed Job whose pods run the node agent (`training.agent`: it waits for pod
0, then runs torchrun and passes the workers' exit codes through) with c10d rendezvous hosted
by pod 0, exactly as the local target does. Pod 0 hosts the rendezvous store, but c10d numbers
the nodes itself (sorted by host name), so a pod's completion index is not its node rank.
Ray: the same ConfigMap and a KubeRay `RayJob`. Same input, same output, byte for byte once
serialised (`documents.py`); the Helm chart in `helm/dlaunch/` renders the same objects.
"""

from __future__ import annotations

from typing import Any

from launcher.plan import plan_batch
from launcher.resolve import job_json, resolve_job
from launcher.spec import JobSpec
from launcher.targets.kubernetes.checks import check_renderable
from launcher.targets.kubernetes.network import render_network_policy
from launcher.targets.kubernetes.pods import (
    COMPLETION_INDEX_LABEL, JOB_FILE, JOB_LABEL, QUEUE_LABEL, RUN_DIR, SPEC_HASH_ANNOTATION, TMP_DIR,
    config_map_name, namespace_of, object_meta, render_container, render_job_container, render_pod_spec,
    render_pod_template, render_resources, render_volumes,
)
from training.contract import CONFIG_ERROR, POST_TRAINING_FAILED, PREEMPTED, BatchLayout

WORKER_CONTAINER = "worker"
RDZV_PORT = 29500
# torch elastic c10d rendezvous settings, in seconds: joining waits for all pods to be
# scheduled and pulled; reads of the store must survive a busy rank 0 at 1,024 nodes.
RDZV_TIMEOUTS = {"join_timeout": 900, "last_call_timeout": 30, "close_timeout": 60, "read_timeout": 300}
# Every DeepSpeed pod runs the node agent as PID 1, with no shell in front: the kernel drops
# SIGTERM to a PID 1 that has no handler (a shell waiting for a child has none), so the agent
# installs one first, waits for pod 0 (`DLAUNCH_RDZV_*`), then runs torchrun with `args`.
NODE_COMMAND = ["python", "-m", "training.agent"]
# torch elastic gives workers this long between its SIGTERM and its SIGKILL
# (torch/distributed/elastic/agent/server/api.py SimpleElasticAgent.run -> _shutdown(sigval,
# timeout=shutdown_timeout) -> multiprocessing/api.py PContext.close). It must end before the
# kubelet's SIGKILL at terminationGracePeriodSeconds, or the agent never reports exit code 75.
SHUTDOWN_MARGIN_MIN_S = 5
# KubeRay gives Ray pods HTTP liveness/readiness probes only when `rayVersion` is at least 2.53.0;
# otherwise exec probes that run `wget`, which the worker image lacks (ray-project/kuberay,
# ray-operator/controllers/ray/common/pod.go: supportsUnifiedHealthCheck and
# initLivenessAndReadinessProbe). The Dockerfile installs exactly this Ray (a test checks).
RAY_VERSION = "2.60.0"
# An unset `kubernetes.ttl_after_finished` keeps a finished Ray cluster (and its pods' logs) this
# long; KubeRay deletes the RayCluster when it passes (rayjob_controller.go:
# handleShutdownAfterJobFinishes). 0 would delete the pods, and every rank's log, at once.
DEFAULT_RAY_TTL_S = 600
RAY_ENTRYPOINT = f"python -m training.ray_entry {JOB_FILE}"
# The Ray head runs GCS, the dashboard and the driver; it needs no GPU. The submitter pod only
# runs `ray job submit` and follows the logs.
RAY_HEAD_RESOURCES = {"cpu": "4", "memory": "16Gi", "shm": "4Gi"}
RAY_SUBMITTER_RESOURCES = {"cpu": "1", "memory": "1Gi"}
RAY_HEAD_PORTS = (("gcs-server", 6379), ("dashboard", 8265), ("client", 10001))
# Every Ray node's dashboard agent answers health checks here (KubeRay utils/constant.go
# DefaultDashboardAgentListenPort and RayNodeHealthPath).
RAY_DASHBOARD_AGENT_PORT = 52365
RAY_HEALTH_PATH = "/api/healthz"

Objects = list[dict[str, Any]]


# The one place render meets the planner. `render` takes either a `BatchLayout` or a `Plan`
# (`layout_of`), so moving to `plan_job(spec)` is a change to `plan_for_render` alone.
def plan_for_render(spec: JobSpec) -> BatchLayout:
    """Plan the job for rendering."""
    return plan_batch(spec)


def layout_of(plan: Any) -> BatchLayout:
    """The batch layout inside a plan (a `BatchLayout` today, a `Plan` with `.layout` later)."""
    return plan.layout if hasattr(plan, "layout") else plan


def render(spec: JobSpec, plan: Any) -> Objects:
    """Every object the job needs, in the order they should be applied."""
    check_renderable(spec)
    # The NetworkPolicy goes before the workload, so no pod of the job ever runs unprotected.
    shared = [render_configmap(spec, plan)]
    if spec.kubernetes.network_policy.enabled:
        shared.append(render_network_policy(spec))
    if spec.backend == "ray":
        return [*shared, render_rayjob(spec)]
    return [*shared, render_headless_service(spec), render_indexed_job(spec)]


def rendezvous_host(spec: JobSpec) -> str:
    """DNS name of pod 0: `<job>-0` on the headless Service `<job>` in the job's namespace."""
    return f"{spec.name}-0.{spec.name}.{namespace_of(spec)}.svc"


def rank_selector(spec: JobSpec, pod_index: int) -> str:
    """Label selector of one pod of the job (for `dlaunch logs` and `status`): the pod with
    completion index `pod_index` (DeepSpeed), or the head (0) / the workers (Ray). Pod 0 hosts the
    c10d store; which node rank a pod gets is c10d's choice, not its index."""
    if spec.backend == "ray":
        kind = "head" if pod_index == 0 else "worker"
        return f"{JOB_LABEL}={spec.name},ray.io/node-type={kind}"
    return f"{JOB_LABEL}={spec.name},{COMPLETION_INDEX_LABEL}={pod_index}"


def resolved_job_json(spec: JobSpec, plan: Any) -> str:
    """The job file every worker reads, with the pods' run directory."""
    return job_json(resolve_job(spec, layout_of(plan), RUN_DIR))


def render_configmap(spec: JobSpec, plan: Any) -> dict[str, Any]:
    """The resolved job JSON every worker reads."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": object_meta(spec, config_map_name(spec)),
            "data": {"job.json": resolved_job_json(spec, plan)}}


def render_headless_service(spec: JobSpec) -> dict[str, Any]:
    """Gives each pod `<job>-<index>.<job>` a DNS record, published before the pod is ready."""
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": object_meta(spec, spec.name),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {JOB_LABEL: spec.name},
            "ports": [{"name": "c10d", "port": RDZV_PORT, "targetPort": RDZV_PORT, "protocol": "TCP"}],
        },
    }


def queue_fields(spec: JobSpec) -> tuple[dict[str, str], dict[str, Any]]:
    """Kueue: the queue label, and `suspend: true` so Kueue decides when the job starts."""
    if spec.kubernetes.queue is None:
        return {}, {}
    return {QUEUE_LABEL: spec.kubernetes.queue}, {"suspend": True}


def render_pod_failure_policy() -> dict[str, Any]:
    """Fail at once, with the rule named in the Job's status, on a configuration error and when
    post-training work failed after the model was committed; replace a preempted pod for free."""
    def exit_codes(code: int) -> dict[str, Any]:
        return {"containerName": WORKER_CONTAINER, "operator": "In", "values": [code]}

    return {"rules": [
        {"action": "FailJob", "onExitCodes": exit_codes(CONFIG_ERROR)},
        {"action": "FailJob", "onExitCodes": exit_codes(POST_TRAINING_FAILED)},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "Ignore", "onExitCodes": exit_codes(PREEMPTED)},
    ]}


def render_indexed_job(spec: JobSpec) -> dict[str, Any]:
    """One pod per node. torchrun restarts the gang (`--max-restarts`); the Job only replaces pods
    lost to disruption or preemption (ignored failures). Any other failed pod fails the Job at once
    (`backoffLimitPerIndex: 0`, `maxFailedIndexes: 0`): its agent has already spent the restart
    budget, and replacing it would multiply the retries. Per-index backoff also stays short: the
    Job controller delays a replacement by 10 s x 2^(failures of that index only), at most 10
    minutes (kubernetes/kubernetes pkg/controller/job/backoff_utils.go getRemainingTimePerIndex,
    which counts the index's failures, ignored ones included), within the rendezvous join timeout;
    the job-wide `backoffLimit` delay instead grows with every pod's failure. Both fields need
    completionMode Indexed (pkg/apis/batch/validation/validation.go validateJobSpec)."""
    k8s, nodes = spec.kubernetes, spec.resources.nodes
    queue_label, suspend = queue_fields(spec)
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed", "completions": nodes, "parallelism": nodes,
        "backoffLimitPerIndex": 0, "maxFailedIndexes": 0, "podFailurePolicy": render_pod_failure_policy(),
        "podReplacementPolicy": "Failed", **suspend,
    }
    if k8s.active_deadline is not None:
        job_spec["activeDeadlineSeconds"] = k8s.active_deadline
    if k8s.ttl_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = k8s.ttl_after_finished
    job_spec["template"] = render_torchrun_pod_template(spec)
    meta = object_meta(spec, spec.name, {SPEC_HASH_ANNOTATION: spec.spec_hash()}, queue_label)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}


def agent_args(spec: JobSpec) -> list[str]:
    """torchrun's arguments: c10d rendezvous hosted by pod 0. No `--node-rank`: c10d ignores it and
    ranks the nodes by sorted host name (torch/distributed/elastic/rendezvous/dynamic_rendezvous.py
    _DistributedRendezvousOpExecutor._mark_rendezvous_complete)."""
    conf = ",".join(f"{key}={value}" for key, value in RDZV_TIMEOUTS.items())
    return [
        f"--nnodes={spec.resources.nodes}", f"--nproc-per-node={spec.resources.procs_per_node}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={rendezvous_host(spec)}:{RDZV_PORT}", f"--rdzv-id={spec.name}", f"--rdzv-conf={conf}",
        f"--max-restarts={spec.kubernetes.max_restarts}", "-m", "training.run", JOB_FILE,
    ]


def elastic_shutdown_timeout(termination_grace: int) -> int:
    """Seconds torch elastic waits for workers after SIGTERM: the grace period less a margin (a
    tenth, at least SHUTDOWN_MARGIN_MIN_S), so the agent exits before the kubelet's SIGKILL."""
    return max(1, termination_grace - max(SHUTDOWN_MARGIN_MIN_S, termination_grace // 10))


def torchrun_env(spec: JobSpec) -> list[dict[str, Any]]:
    """What the agent's start-up wait reads, and torch elastic's shutdown window."""
    return [
        {"name": "DLAUNCH_RDZV_HOST", "value": rendezvous_host(spec)},
        {"name": "DLAUNCH_RDZV_PORT", "value": str(RDZV_PORT)},
        {"name": "DLAUNCH_RDZV_WAIT_TIMEOUT", "value": str(RDZV_TIMEOUTS["join_timeout"])},
        {"name": "TORCH_ELASTIC_SHUTDOWN_TIMEOUT",
         "value": str(elastic_shutdown_timeout(spec.kubernetes.termination_grace))},
    ]


def render_torchrun_pod_template(spec: JobSpec) -> dict[str, Any]:
    """A DeepSpeed node: the node agent (waits for pod 0, then torchrun with one worker per GPU)."""
    res = spec.resources
    worker = render_job_container(
        WORKER_CONTAINER, spec, torchrun_env(spec), render_resources(res.cpu, res.memory, res.gpus_per_node),
        command=list(NODE_COMMAND), args=agent_args(spec),
        ports=[{"name": "c10d", "containerPort": RDZV_PORT, "protocol": "TCP"}],
    )
    pod_spec = render_pod_spec(spec, [worker], render_volumes(spec, res.shm), restartPolicy="Never",
                               subdomain=spec.name)
    return render_pod_template(spec, pod_spec)


def ray_ttl_after_finished(spec: JobSpec) -> int:
    """How long KubeRay keeps the finished Ray cluster: the spec's TTL, else DEFAULT_RAY_TTL_S."""
    ttl = spec.kubernetes.ttl_after_finished
    return DEFAULT_RAY_TTL_S if ttl is None else ttl


def render_rayjob(spec: JobSpec, entrypoint: str = RAY_ENTRYPOINT) -> dict[str, Any]:
    """A KubeRay RayJob: a cluster of one head and `nodes` GPU workers, deleted (with its pods) the
    TTL after the job ends. The RayJob and its submitter Job (the driver's log) stay until `dlaunch
    cancel`: `deletionStrategy.deletionRules` could delete the RayJob itself, but KubeRay refuses
    them together with `shutdownAfterJobFinishes`, which a suspended (Kueue) RayJob requires
    (ray-operator/controllers/ray/utils/validation.go: ValidateRayJobSpec,
    validateDeletionConfiguration), and they need the RayJobDeletionPolicy feature gate.
    `entrypoint` is what the head runs: Ray Train by default; `prepare_job.py` passes the prepare job's."""
    k8s = spec.kubernetes
    queue_label, suspend = queue_fields(spec)
    job_spec: dict[str, Any] = {
        "entrypoint": entrypoint, "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": ray_ttl_after_finished(spec), "backoffLimit": k8s.max_restarts, **suspend,
    }
    if k8s.active_deadline is not None:
        job_spec["activeDeadlineSeconds"] = k8s.active_deadline
    job_spec["submissionMode"] = "K8sJobMode"
    job_spec["submitterPodTemplate"] = render_ray_submitter_template(spec)
    job_spec["rayClusterSpec"] = {"rayVersion": RAY_VERSION, "headGroupSpec": render_ray_head_group(spec),
                                  "workerGroupSpecs": [render_ray_worker_group(spec)]}
    meta = object_meta(spec, spec.name, {SPEC_HASH_ANNOTATION: spec.spec_hash()}, queue_label)
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": meta, "spec": job_spec}


def ray_probes(head: bool) -> dict[str, Any]:
    """The Ray container's liveness and readiness probes, set explicitly: an HTTP GET of the
    dashboard agent's health endpoint, with KubeRay's own timings. KubeRay fills in probes only
    where a template has none (ray-operator/controllers/ray/common/pod.go BuildPod ->
    initLivenessAndReadinessProbe; path and timings in controllers/ray/utils/constant.go), and
    operators before 1.6 would fill in `wget` exec probes; with these, every KubeRay version
    probes the same way, and a scanner sees the probes the running pods have."""
    action = {"httpGet": {"path": RAY_HEALTH_PATH, "port": RAY_DASHBOARD_AGENT_PORT}}
    timeout = 5 if head else 2
    return {
        "livenessProbe": {**action, "initialDelaySeconds": 30, "timeoutSeconds": timeout, "periodSeconds": 5,
                          "successThreshold": 1, "failureThreshold": 120},
        "readinessProbe": {**action, "initialDelaySeconds": 10, "timeoutSeconds": timeout, "periodSeconds": 5,
                           "successThreshold": 1, "failureThreshold": 10},
    }


def render_ray_head_group(spec: JobSpec) -> dict[str, Any]:
    """The Ray head: GCS, dashboard and the driver of the training run; no GPUs."""
    head = RAY_HEAD_RESOURCES
    container = render_job_container(
        "ray-head", spec, [], render_resources(head["cpu"], head["memory"], 0),
        ports=[{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in RAY_HEAD_PORTS],
        **ray_probes(head=True),
    )
    pod_spec = render_pod_spec(spec, [container], render_volumes(spec, head["shm"]))
    return {"rayStartParams": {"dashboard-host": "0.0.0.0"}, "template": render_pod_template(spec, pod_spec)}


def render_ray_worker_group(spec: JobSpec) -> dict[str, Any]:
    """`nodes` identical GPU workers; min = max = replicas, so nothing autoscales mid-run."""
    res = spec.resources
    container = render_job_container("ray-worker", spec, [], render_resources(res.cpu, res.memory, res.gpus_per_node),
                                     **ray_probes(head=False))
    pod_spec = render_pod_spec(spec, [container], render_volumes(spec, res.shm))
    return {"groupName": "workers", "replicas": res.nodes, "minReplicas": res.nodes, "maxReplicas": res.nodes,
            "template": render_pod_template(spec, pod_spec)}


def render_ray_submitter_template(spec: JobSpec) -> dict[str, Any]:
    """The pod KubeRay runs `ray job submit` in (it fills in the command); no credentials. Its root
    filesystem is read-only too, so the Ray CLI gets a writable /tmp as its home."""
    sub = RAY_SUBMITTER_RESOURCES
    container = render_container("ray-job-submitter", spec, render_resources(sub["cpu"], sub["memory"], 0),
                                 env=[{"name": "HOME", "value": TMP_DIR}],
                                 volumeMounts=[{"name": "tmp", "mountPath": TMP_DIR}])
    pod_spec = render_pod_spec(spec, [container], [{"name": "tmp", "emptyDir": {}}], restartPolicy="Never")
    return render_pod_template(spec, pod_spec)
