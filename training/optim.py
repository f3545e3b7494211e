"""AdamW with decoupled weight decay on weights only, and the learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from training.config import OptimizerConfig, ScheduleConfig

if TYPE_CHECKING:
    import torch


def param_groups(model: "torch.nn.Module", weight_decay: float, frozen_prefix: str | None = None) -> list[dict[str, Any]]:
    """Matrices decay; biases, norm weights and other 1-d parameters do not. Parameters under
    `frozen_prefix` (the backbone while it is frozen) get groups of their own. Empty groups are dropped."""
    buckets: dict[tuple[bool, bool], list[Any]] = {(f, d): [] for f in (False, True) for d in (True, False)}
    for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        if param.requires_grad:
            frozen = bool(frozen_prefix) and name.startswith(frozen_prefix or "")
            buckets[(frozen, param.ndim >= 2)].append(param)
    return [
        {"params": params, "weight_decay": weight_decay if decay else 0.0, "frozen": frozen}
        for (frozen, decay), params in buckets.items() if params
    ]


def build_optimizer(model: "torch.nn.Module", config: OptimizerConfig, offload: bool = False,
                    frozen_prefix: str | None = None) -> "torch.optim.Optimizer":
    """AdamW (torch's fused kernel); with ZeRO optimizer offload, DeepSpeed's CPU AdamW (the same
    math, run on the host)."""
    groups = param_groups(model, config.weight_decay, frozen_prefix)
    if offload:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, lr=config.lr, betas=config.betas, eps=config.eps, adamw_mode=True)
    import torch

    # The fused kernel (one pass over each tensor for the whole update; CPU and CUDA since torch 2.4)
    # is what HF Trainer uses by default too; on CPU it is ~1.7x faster than the single-tensor loop.
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps, fused=True)


def lr_multiplier(schedule: ScheduleConfig, max_steps: int) -> Callable[[int], float]:
    """step -> factor of the peak lr: linear warmup, then cosine / linear decay to min_lr_ratio, or constant."""
    warmup, floor = schedule.warmup_steps, schedule.min_lr_ratio

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule.decay == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if schedule.decay == "cosine" else 1 - progress
        return floor + (1 - floor) * shape

    return factor


def group_multipliers(groups: list[dict[str, Any]], schedule: ScheduleConfig, max_steps: int,
                      freeze_steps: int) -> list[Callable[[int], float]]:
    """One lr factor per parameter group: frozen groups stay at 0 for their first `freeze_steps`."""
    base = lr_multiplier(schedule, max_steps)

    def frozen_factor(step: int) -> float:
        return 0.0 if step < freeze_steps else base(step)

    return [frozen_factor if group.get("frozen") else base for group in groups]
