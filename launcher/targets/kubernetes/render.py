"""Kubernetes objects for a job: a pure function `render(spec, plan) -> list[dict]`.

DeepSpeed: a ConfigMap with the resolved job JSON, a headless Service giving pod 0 a stable
DNS name, and an Indexed Job whose pods run the node agent (`training.agent`, torchrun that
passes the workers' exit codes through) with c10d rendezvous at pod 0, exactly as the local
target does.
Ray: the same ConfigMap and a KubeRay `RayJob`. Same input, same output, byte for byte once
serialised (`documents.py`); the Helm chart in `helm/dlaunch/` renders the same objects.
"""

from __future__ import annotations

from typing import Any

from launcher.plan import plan_batch
from launcher.resolve import job_json, resolve_job
from launcher.spec import JobSpec
from launcher.targets.kubernetes.checks import check_renderable
from launcher.targets.kubernetes.pods import (
    COMPLETION_INDEX_LABEL, JOB_FILE, JOB_LABEL, QUEUE_LABEL, RUN_DIR, SPEC_HASH_ANNOTATION,
    config_map_name, namespace_of, object_meta, render_container, render_job_container, render_pod_spec,
    render_pod_template, render_resources, render_volumes,
)
from training.config import BatchLayout
from training.exitcodes import CONFIG_ERROR, PREEMPTED

WORKER_CONTAINER = "worker"
RDZV_PORT = 29500
# torch elastic c10d rendezvous settings, in seconds: joining waits for all pods to be
# scheduled and pulled; reads of the store must survive a busy rank 0 at 1,024 nodes.
RDZV_TIMEOUTS = {"join_timeout": 900, "last_call_timeout": 30, "close_timeout": 60, "read_timeout": 300}
# Every DeepSpeed pod: wait until pod 0 is reachable (DNS catches up after the pod starts), then
# become the node agent, so that it is PID 1 and receives SIGTERM itself. Its arguments are
# torchrun's, in the container's `args`.
NODE_STARTUP = ('python -m training.rendezvous_wait --host "$DLAUNCH_RDZV_HOST" --port "$DLAUNCH_RDZV_PORT" '
                '--rank "$JOB_COMPLETION_INDEX" --timeout "$DLAUNCH_RDZV_WAIT_TIMEOUT" '
                '&& exec python -m training.agent "$@"')
RAY_ENTRYPOINT = f"python -m training.ray_entry {JOB_FILE}"
# The Ray head runs GCS, the dashboard and the driver; it needs no GPU. The submitter pod only
# runs `ray job submit` and follows the logs.
RAY_HEAD_RESOURCES = {"cpu": "4", "memory": "16Gi", "shm": "4Gi"}
RAY_SUBMITTER_RESOURCES = {"cpu": "1", "memory": "1Gi"}
RAY_HEAD_PORTS = (("gcs-server", 6379), ("dashboard", 8265), ("client", 10001))

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
    config = render_configmap(spec, plan)
    if spec.backend == "ray":
        return [config, render_rayjob(spec)]
    return [config, render_headless_service(spec), render_indexed_job(spec)]


def rendezvous_host(spec: JobSpec) -> str:
    """DNS name of pod 0: `<job>-0` on the headless Service `<job>` in the job's namespace."""
    return f"{spec.name}-0.{spec.name}.{namespace_of(spec)}.svc"


def rank_selector(spec: JobSpec, node_rank: int) -> str:
    """Label selector of the pod running node `node_rank` (for `dlaunch logs` and `status`)."""
    if spec.backend == "ray":
        kind = "head" if node_rank == 0 else "worker"
        return f"{JOB_LABEL}={spec.name},ray.io/node-type={kind}"
    return f"{JOB_LABEL}={spec.name},{COMPLETION_INDEX_LABEL}={node_rank}"


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
    """Fail at once on a configuration error; do not count preemption against the retry budget."""
    def exit_codes(code: int) -> dict[str, Any]:
        return {"containerName": WORKER_CONTAINER, "operator": "In", "values": [code]}

    return {"rules": [
        {"action": "FailJob", "onExitCodes": exit_codes(CONFIG_ERROR)},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "Ignore", "onExitCodes": exit_codes(PREEMPTED)},
    ]}


def render_indexed_job(spec: JobSpec) -> dict[str, Any]:
    """One pod per node, index = node rank; each gang restart may fail every pod once."""
    k8s, nodes = spec.kubernetes, spec.resources.nodes
    queue_label, suspend = queue_fields(spec)
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed", "completions": nodes, "parallelism": nodes,
        "backoffLimit": k8s.max_restarts * nodes, "podFailurePolicy": render_pod_failure_policy(),
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
    """torchrun's arguments: c10d rendezvous at pod 0, node rank from the completion index."""
    conf = ",".join(f"{key}={value}" for key, value in RDZV_TIMEOUTS.items())
    return [
        f"--nnodes={spec.resources.nodes}", f"--nproc-per-node={spec.resources.procs_per_node}",
        "--node-rank=$(JOB_COMPLETION_INDEX)", "--rdzv-backend=c10d",
        f"--rdzv-endpoint={rendezvous_host(spec)}:{RDZV_PORT}", f"--rdzv-id={spec.name}", f"--rdzv-conf={conf}",
        f"--max-restarts={spec.kubernetes.max_restarts}", "-m", "training.run", JOB_FILE,
    ]


def torchrun_env(spec: JobSpec) -> list[dict[str, Any]]:
    """What the start-up wait reads; torch elastic gives workers the grace period to checkpoint."""
    return [
        {"name": "DLAUNCH_RDZV_HOST", "value": rendezvous_host(spec)},
        {"name": "DLAUNCH_RDZV_PORT", "value": str(RDZV_PORT)},
        {"name": "DLAUNCH_RDZV_WAIT_TIMEOUT", "value": str(RDZV_TIMEOUTS["join_timeout"])},
        {"name": "TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "value": str(spec.kubernetes.termination_grace)},
    ]


def render_torchrun_pod_template(spec: JobSpec) -> dict[str, Any]:
    """A DeepSpeed node: wait for pod 0, then the node agent with one worker per GPU."""
    res = spec.resources
    worker = render_job_container(
        WORKER_CONTAINER, spec, torchrun_env(spec), render_resources(res.cpu, res.memory, res.gpus_per_node),
        command=["/bin/sh", "-c", NODE_STARTUP, "dlaunch-node"], args=agent_args(spec),
        ports=[{"name": "c10d", "containerPort": RDZV_PORT, "protocol": "TCP"}],
    )
    pod_spec = render_pod_spec(spec, [worker], render_volumes(spec, res.shm), restartPolicy="Never",
                               subdomain=spec.name)
    return render_pod_template(spec, pod_spec)


def render_rayjob(spec: JobSpec) -> dict[str, Any]:
    """A KubeRay RayJob: a cluster of one head and `nodes` GPU workers, deleted when the job ends."""
    k8s = spec.kubernetes
    queue_label, suspend = queue_fields(spec)
    job_spec: dict[str, Any] = {
        "entrypoint": RAY_ENTRYPOINT, "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": k8s.ttl_after_finished or 0, "backoffLimit": k8s.max_restarts, **suspend,
    }
    if k8s.active_deadline is not None:
        job_spec["activeDeadlineSeconds"] = k8s.active_deadline
    job_spec["submissionMode"] = "K8sJobMode"
    job_spec["submitterPodTemplate"] = render_ray_submitter_template(spec)
    job_spec["rayClusterSpec"] = {"headGroupSpec": render_ray_head_group(spec),
                                  "workerGroupSpecs": [render_ray_worker_group(spec)]}
    meta = object_meta(spec, spec.name, {SPEC_HASH_ANNOTATION: spec.spec_hash()}, queue_label)
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": meta, "spec": job_spec}


def render_ray_head_group(spec: JobSpec) -> dict[str, Any]:
    """The Ray head: GCS, dashboard and the driver of the training run; no GPUs."""
    head = RAY_HEAD_RESOURCES
    container = render_job_container(
        "ray-head", spec, [], render_resources(head["cpu"], head["memory"], 0),
        ports=[{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in RAY_HEAD_PORTS],
    )
    pod_spec = render_pod_spec(spec, [container], render_volumes(spec, head["shm"]))
    return {"rayStartParams": {"dashboard-host": "0.0.0.0"}, "template": render_pod_template(spec, pod_spec)}


def render_ray_worker_group(spec: JobSpec) -> dict[str, Any]:
    """`nodes` identical GPU workers; min = max = replicas, so nothing autoscales mid-run."""
    res = spec.resources
    container = render_job_container("ray-worker", spec, [], render_resources(res.cpu, res.memory, res.gpus_per_node))
    pod_spec = render_pod_spec(spec, [container], render_volumes(spec, res.shm))
    return {"groupName": "workers", "replicas": res.nodes, "minReplicas": res.nodes, "maxReplicas": res.nodes,
            "template": render_pod_template(spec, pod_spec)}


def render_ray_submitter_template(spec: JobSpec) -> dict[str, Any]:
    """The pod KubeRay runs `ray job submit` in (it fills in the command); no credentials, no mounts."""
    sub = RAY_SUBMITTER_RESOURCES
    container = render_container("ray-job-submitter", spec, render_resources(sub["cpu"], sub["memory"], 0))
    return render_pod_template(spec, render_pod_spec(spec, [container], restartPolicy="Never"))
