"""Play the cluster's controllers against the fake API server: nodes, secrets, and a job's pods.

The fake has no Job controller, scheduler or kubelet. `JobSim` does their part for one dlaunch
job, by writing realistic Pod objects (owned by the Job, labelled with the completion index),
container states, Events, Job conditions and container logs into the fake's store.
"""

from __future__ import annotations

import base64
from typing import Any

from launcher.targets.kubernetes.pods import COMPLETION_INDEX_LABEL
from tests.fake_kube.server import FakeKubeApi

Obj = dict[str, Any]


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


def local_queue(name: str, namespace: str) -> Obj:
    return {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "LocalQueue",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"clusterQueue": "cluster-queue"}}


def running() -> Obj:
    return {"running": {"startedAt": "2025-01-01T00:00:00Z"}}


def waiting(reason: str, message: str = "") -> Obj:
    return {"waiting": {"reason": reason, **({"message": message} if message else {})}}


def terminated(exit_code: int, reason: str = "Error") -> Obj:
    return {"terminated": {"exitCode": exit_code, "reason": reason, "startedAt": "2025-01-01T00:00:00Z",
                           "finishedAt": "2025-01-01T00:10:00Z"}}


def unschedulable(message: str) -> list[Obj]:
    return [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]


class JobSim:
    """The Job controller and kubelet for one dlaunch Indexed Job in the fake."""

    def __init__(self, fake: FakeKubeApi, namespace: str, name: str) -> None:
        self.fake, self.namespace, self.name = fake, namespace, name
        self.generation: dict[int, int] = {}

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
                         "annotations": {COMPLETION_INDEX_LABEL: str(index)},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": self.name,
                                              "uid": job["metadata"]["uid"], "controller": True}]},
            "spec": spec,
            "status": {"phase": phase, "conditions": conditions or [], "containerStatuses": [status]},
        })

    def set_status(self, **status: Any) -> Obj:
        job = self.job()
        job["status"] = {**job.get("status", {}), **status}
        return self.fake.add(job)

    def start(self) -> None:
        """Every rank's pod running, the Job counting them ready."""
        nodes = self.job()["spec"]["completions"]
        for index in range(nodes):
            self.pod(index, node_name=f"node-{index}")
        self.set_status(active=nodes, ready=nodes)

    def log(self, index: int, *lines: str) -> None:
        self.fake.append_log(self.namespace, self.pod_name(index), *lines)

    def finish(self, succeeded: bool, reason: str = "BackoffLimitExceeded",
               message: str = "Job has reached the specified backoff limit") -> None:
        """Every pod terminated, then the Job's Complete (or Failed) condition."""
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
