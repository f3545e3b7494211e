"""Knowledge distillation inside the training loop: a frozen teacher guides the task's student.

With `training.compression.distill`, the task's model is a student built from the teacher
(fewer layers, optionally narrower, initialised from every k-th teacher layer), and its loss is
`alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * task loss`. The teacher runs on every
rank, frozen, in eval mode, next to the DeepSpeed (or DDP) student: any ZeRO stage. It runs in
bf16 (half the memory) unless the job trains in fp32: a job chooses fp32 on CPUs without bf16
kernels, where a bf16 forward takes over 10 times as long (launcher/hardware.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.config import DistillConfig

if TYPE_CHECKING:
    import torch
    from torch import nn


def load_teacher(distill: DistillConfig, model_type: str, endpoint_url: str | None) -> tuple["nn.Module", dict]:
    """The teacher: a dlaunch checkpoint URI (`.../<job>/checkpoints[/step-N]`) or a transformers directory."""
    if "/checkpoints" in distill.teacher:
        from training.models.restore import load_trained_model

        with tempfile.TemporaryDirectory() as tmp:
            trained = load_trained_model(distill.teacher, Path(tmp), endpoint_url)
        return trained.model, trained.info
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from training.models.pretrained import resolve_pretrained

    path = resolve_pretrained(distill.teacher, endpoint_url)
    loader = AutoModelForSequenceClassification if model_type == "sequence-classification" else AutoModelForCausalLM
    return loader.from_pretrained(path), {}


def build_distilled_student(teacher: "nn.Module", distill: DistillConfig) -> "nn.Module":
    from training.compress.distill import build_student, model_config

    layers = distill.student_layers or max(1, int(model_config(teacher).num_hidden_layers) // 2)
    return build_student(teacher, num_layers=layers, hidden_size=distill.student_hidden,
                         init_from_teacher=distill.init_from_teacher)


def teacher_dtype(precision: str) -> "torch.dtype":
    """The frozen teacher's dtype for a job training in `precision`: fp32 for fp32 jobs, else bf16."""
    import torch

    return torch.float32 if precision == "fp32" else torch.bfloat16


class Distiller:
    """Computes the distillation loss of a micro-batch from student and teacher logits."""

    def __init__(self, teacher: "nn.Module", distill: DistillConfig, device: Any, precision: str) -> None:
        from training.compress.distill import freeze_teacher

        self.teacher = freeze_teacher(teacher, teacher_dtype(precision)).to(device)
        self.config = distill

    def teacher_logits(self, batch: dict[str, "torch.Tensor"]) -> "torch.Tensor":
        import torch

        from training.compress.export import logits_of

        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            return logits_of(self.teacher(**inputs))

    def loss(self, student_logits: "torch.Tensor", batch: dict[str, "torch.Tensor"], causal: bool) -> "torch.Tensor":
        from training.compress.distill import distillation_loss

        teacher_logits = self.teacher_logits(batch)
        labels = batch["labels"]
        if causal:  # position t predicts token t+1
            student_logits, teacher_logits, labels = student_logits[:, :-1], teacher_logits[:, :-1], labels[:, 1:]
        return distillation_loss(student_logits, teacher_logits, labels, self.config.temperature, self.config.alpha)
