"""AdamW with decoupled weight decay on weights only, and the learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from training.config import OptimizerConfig, ScheduleConfig

if TYPE_CHECKING:
    import torch


def param_groups(model: "torch.nn.Module", weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: matrices decay; biases, norm weights and other 1-d parameters do not."""
    decay, no_decay = [], []
    for _, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: "torch.nn.Module", config: OptimizerConfig, offload: bool = False) -> "torch.optim.Optimizer":
    """AdamW; with ZeRO optimizer offload, DeepSpeed's CPU AdamW (the same math, run on the host)."""
    groups = param_groups(model, config.weight_decay)
    if offload:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, lr=config.lr, betas=config.betas, eps=config.eps, adamw_mode=True)
    import torch

    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps, foreach=False)


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
