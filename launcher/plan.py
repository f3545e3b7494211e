"""Lay a job out on its workers: micro-batch x gradient accumulation x data-parallel = global.

The worker receives the result in the resolved spec, so every rank agrees on it.
"""

from __future__ import annotations

from launcher.errors import PlanError
from launcher.spec import JobSpec
from training.config import BatchLayout

# Without a memory model, prefer micro-batches no larger than this when the spec leaves it open.
DEFAULT_MAX_MICRO = 8


def divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def plan_batch(spec: JobSpec, max_micro: int = DEFAULT_MAX_MICRO) -> BatchLayout:
    """Choose micro-batch and accumulation so that the global batch is met exactly."""
    batch = spec.training.batch
    dp = spec.world_size
    if batch.global_ % dp:
        lower = batch.global_ // dp * dp
        suggestion = f"{lower} or {lower + dp}" if lower else f"{dp}"
        raise PlanError(
            f"training.batch.global ({batch.global_}) must be divisible by the data-parallel size {dp} "
            f"(nodes {spec.resources.nodes} x {spec.resources.procs_per_node} workers); try {suggestion}"
        )
    per_rank = batch.global_ // dp
    if batch.micro is not None:
        if per_rank % batch.micro:
            valid = ", ".join(str(d) for d in divisors(per_rank))
            raise PlanError(
                f"training.batch.micro ({batch.micro}) must divide global / data-parallel = "
                f"{batch.global_} / {dp} = {per_rank}; valid micro-batches: {valid}"
            )
        micro = batch.micro
    else:
        micro = max(d for d in divisors(per_rank) if d <= max_micro)
    stage = spec.training.zero.stage
    if stage == "auto":
        raise PlanError("training.zero.stage: auto needs the memory planner, which is not available yet; set 0-3")
    layout = BatchLayout(
        micro=micro, grad_accum=per_rank // micro, data_parallel=dp, zero_stage=int(stage),
        offload_optimizer=spec.training.zero.offload_optimizer, offload_params=spec.training.zero.offload_params,
    )
    assert layout.global_batch == batch.global_
    return layout
