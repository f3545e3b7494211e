"""Turn a validated spec and its plan into the resolved job JSON every worker reads."""

from __future__ import annotations

import json

from launcher.spec import JobSpec
from training.contract import BatchLayout, ResolvedJob


def resolve_job(spec: JobSpec, layout: BatchLayout, run_dir: str, max_restarts: int | None = None) -> ResolvedJob:
    """The worker's view of the job: training settings, the plan's batch layout, where to write.

    `max_restarts`: the target's restart budget (default: `kubernetes.max_restarts`, which only the
    Kubernetes target reads; the local target passes its own)."""
    return ResolvedJob(
        name=spec.name,
        backend=spec.backend,
        nodes=spec.resources.nodes,
        procs_per_node=spec.resources.procs_per_node,
        gpus_per_node=spec.resources.gpus_per_node,
        max_restarts=spec.kubernetes.max_restarts if max_restarts is None else max_restarts,
        training=spec.training,
        layout=layout,
        run_dir=run_dir,
        spec_hash=spec.spec_hash(),
    )


def job_json(job: ResolvedJob) -> str:
    """Deterministic JSON (sorted keys, aliases such as `global`) for files and ConfigMaps."""
    return json.dumps(job.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True) + "\n"
