"""The DeepSpeed engine: config generated from the spec, initialised around the model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from training.config import BatchLayout, TrainingConfig
from training.errors import ConfigError
from training.optim import build_optimizer, group_multipliers

if TYPE_CHECKING:
    import torch

# Keys the planner owns; a raw `deepspeed:` block may not contradict them.
PLANNED_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")


class DeepSpeedConfigError(ConfigError):
    """The spec's raw `deepspeed:` keys contradict what dlaunch planned."""


def _zero_section(layout: BatchLayout) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": layout.zero_stage}
    if layout.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    if layout.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": False}
    return zero


def deepspeed_config(training: TrainingConfig, layout: BatchLayout) -> dict[str, Any]:
    """The DeepSpeed JSON config for this job; the spec's raw keys are merged last and checked."""
    config: dict[str, Any] = {
        "train_batch_size": layout.global_batch,
        "train_micro_batch_size_per_gpu": layout.micro,
        "gradient_accumulation_steps": layout.grad_accum,
        "gradient_clipping": training.optimizer.grad_clip,
        "zero_optimization": _zero_section(layout),
        "bf16": {"enabled": training.precision == "bf16"},
        "fp16": {"enabled": training.precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    for key, value in training.deepspeed.items():
        if key in PLANNED_KEYS and value != config[key]:
            raise DeepSpeedConfigError(
                f"training.deepspeed.{key} = {value} contradicts the planned {config[key]}; "
                "set training.batch instead"
            )
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def initialize(model: "torch.nn.Module", training: TrainingConfig, layout: BatchLayout) -> Any:
    """Wrap `model` in a DeepSpeed engine with AdamW and the spec's lr schedule.

    With `model.freeze_backbone_steps`, parameters under `backbone.` train at lr 0 (AdamW's
    decoupled decay is scaled by lr too, so they do not move) for that many steps.
    """
    import deepspeed
    import torch

    from training.distributed import select_accelerator
    from training.engine.shm_allreduce import connect

    connect(select_accelerator())  # does nothing when the worker has connected already (make_context)
    freeze = training.model.freeze_backbone_steps
    frozen_prefix = "backbone." if freeze else None
    optimizer = build_optimizer(model, training.optimizer, offload=layout.offload_optimizer,
                                frozen_prefix=frozen_prefix)
    factors = group_multipliers(optimizer.param_groups, training.schedule, training.max_steps, freeze)
    engine, _, _, scheduler = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factors),
        config=deepspeed_config(training, layout),
    )
    return engine, scheduler
