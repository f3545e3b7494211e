"""Plain PyTorch DDP behind the same small interface the loop uses from a DeepSpeed engine.

Used by the Ray backend when `zero.stage` is 0: `engine(**batch)`, `backward(loss)` (scaled by
1/grad_accum, gradients synchronised only on the accumulation boundary), `step()` (clip, AdamW,
schedule on the boundary), `get_lr()`, `train()/eval()`, `device`, and `save_checkpoint` /
`load_checkpoint` with DeepSpeed's (dir, tag) convention so the checkpoint manager serves both.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from training.config import BatchLayout, TrainingConfig
from training.optim import build_optimizer, group_multipliers

STATE_FILE = "ddp_state.pt"


class DDPEngine:
    """Gradient accumulation, clipping, AdamW and the lr schedule around a DDP model."""

    def __init__(self, model: nn.Module, training: TrainingConfig, layout: BatchLayout, device: str) -> None:
        self.device = torch.device(device)
        self.module = model.to(self.device)
        self.model = DistributedDataParallel(self.module) if dist.is_initialized() else self.module
        freeze = training.model.freeze_backbone_steps
        self.optimizer = build_optimizer(self.module, training.optimizer, frozen_prefix="backbone." if freeze else None)
        factors = group_multipliers(self.optimizer.param_groups, training.schedule, training.max_steps, freeze)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factors)
        self.grad_accum, self.clip = layout.grad_accum, training.optimizer.grad_clip
        self.autocast = torch.bfloat16 if training.precision == "bf16" else None
        self.micro_steps = 0

    def __call__(self, **batch: Any) -> Any:
        at_boundary = (self.micro_steps + 1) % self.grad_accum == 0
        sync = contextlib.nullcontext() if at_boundary or not hasattr(self.model, "no_sync") else self.model.no_sync()
        self._sync = sync
        sync.__enter__()
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            return self.model(**batch)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.grad_accum).backward()
        self._sync.__exit__(None, None, None)

    def step(self) -> None:
        self.micro_steps += 1
        if self.micro_steps % self.grad_accum:
            return
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def get_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def train(self) -> None:
        self.module.train()

    def eval(self) -> None:
        self.module.eval()

    def save_checkpoint(self, save_dir: str, tag: str, client_state: dict[str, Any] | None = None,
                        save_latest: bool = False) -> None:
        """Rank 0 writes model, optimizer and schedule state to `<save_dir>/<tag>/ddp_state.pt`."""
        if dist.is_initialized() and dist.get_rank() != 0:
            return
        os.makedirs(os.path.join(save_dir, tag), exist_ok=True)
        torch.save({"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "micro_steps": self.micro_steps,
                    "client_state": client_state or {}}, os.path.join(save_dir, tag, STATE_FILE))

    def load_checkpoint(self, load_dir: str, tag: str) -> tuple[str, dict[str, Any]]:
        """Restore everything `save_checkpoint` wrote; returns (path, client_state) like DeepSpeed."""
        path = os.path.join(load_dir, tag, STATE_FILE)
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro_steps = state["micro_steps"]
        return path, state["client_state"]
