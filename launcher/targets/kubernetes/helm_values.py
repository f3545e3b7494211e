"""Values for the `helm/dlaunch` chart from a spec: `dlaunch render --format helm-values`.

The chart turns these values into the very objects `render.py` produces (a test renders both
and compares them object by object), so a job can be installed, diffed and rolled back with
Helm. Keys are the spec's settings in Helm's camelCase, plus the resolved job JSON.
"""

from __future__ import annotations

from typing import Any

from launcher.spec import JobSpec
from launcher.targets.kubernetes.checks import check_renderable
from launcher.targets.kubernetes.pods import RUN_AS_USER, format_cpu, namespace_of
from launcher.targets.kubernetes.render import (
    DEFAULT_RAY_TTL_S, RAY_HEAD_RESOURCES, RAY_SUBMITTER_RESOURCES, RAY_VERSION, RDZV_PORT, RDZV_TIMEOUTS,
    resolved_job_json,
)


def kubernetes_values(spec: JobSpec) -> dict[str, Any]:
    """The spec's `kubernetes:` section as chart values."""
    k8s = spec.kubernetes
    return {
        "queue": k8s.queue,
        "priorityClass": k8s.priority_class,
        "serviceAccount": k8s.service_account,
        "nodeSelector": dict(sorted(k8s.node_selector.items())),
        "tolerations": [t.model_dump(by_alias=True, exclude_none=True) for t in k8s.tolerations],
        "hostNetwork": k8s.host_network,
        "labels": dict(sorted(k8s.labels.items())),
        "env": dict(sorted(k8s.env.items())),
        "secrets": {"s3": k8s.secrets.s3, "wandb": k8s.secrets.wandb},
        "imagePullSecrets": list(k8s.image_pull_secrets),
        "maxRestarts": k8s.max_restarts,
        "activeDeadline": k8s.active_deadline,
        "ttlAfterFinished": k8s.ttl_after_finished,
        "terminationGrace": k8s.termination_grace,
        "networkPolicy": {"enabled": k8s.network_policy.enabled, "egress": k8s.network_policy.egress},
    }


def tuning_values() -> dict[str, Any]:
    """Settings the spec does not expose; the chart's users may tune them."""
    return {
        "rendezvous": {"port": RDZV_PORT, **{_camel(key): value for key, value in RDZV_TIMEOUTS.items()}},
        "ray": {"version": RAY_VERSION, "defaultTtlAfterFinished": DEFAULT_RAY_TTL_S,
                "head": dict(RAY_HEAD_RESOURCES), "submitter": dict(RAY_SUBMITTER_RESOURCES)},
        "runAsUser": RUN_AS_USER,
    }


def helm_values(spec: JobSpec, plan: Any) -> dict[str, Any]:
    """Everything the chart needs to render this job."""
    check_renderable(spec)
    res = spec.resources
    return {
        "name": spec.name,
        "namespace": namespace_of(spec),
        "backend": spec.backend,
        "image": spec.image,
        "specHash": spec.spec_hash(),
        "nodes": res.nodes,
        "gpusPerNode": res.gpus_per_node,
        "cpu": format_cpu(res.cpu) if res.cpu is not None else None,
        "memory": res.memory,
        "shm": res.shm,
        **kubernetes_values(spec),
        **tuning_values(),
        "jobJson": resolved_job_json(spec, plan),
    }


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)
