"""Which precisions this machine can train in, asked before any worker starts.

DeepSpeed checks the precision only once the engine is built, in every worker:
`DeepSpeedEngine._do_sanity_check` (deepspeed/runtime/engine.py) raises "Type fp16 is not
supported on your device." when `get_accelerator().is_fp16_supported()` is false. Without a GPU
the accelerator is `CPU_Accelerator` (deepspeed/accelerator/cpu_accelerator.py):

- `is_bf16_supported()` returns True on every CPU;
- `is_fp16_supported()` returns `torch.ops.mkldnn._is_mkldnn_fp16_supported()`, which PyTorch
  answers from oneDNN (aten/src/ATen/native/mkldnn/Utils.h, `mkldnn_fp16_device_check` ->
  `ideep::has_fp16_type_support`): only x86-64 CPUs with AVX512-FP16 or AVX-NE-CONVERT ("fp16 path
  needs the cpu support avx_ne_convert or avx512_fp16"); an AMD EPYC with avx512_bf16 alone has
  neither.

`fp16_supported()` first reads those flags from /proc/cpuinfo, which costs nothing. Only where
they are missing (or there is no flags line: another OS or architecture) does it import torch
and ask exactly what DeepSpeed asks, including whether a CUDA device would take the CPU's place.
"""

from __future__ import annotations

import functools
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# The ISA extensions oneDNN needs for fp16 on x86-64, as Linux names them in /proc/cpuinfo.
FP16_CPU_FLAGS = frozenset({"avx512_fp16", "avx_ne_convert"})
# What a job may use instead, in the order to suggest it. DeepSpeed's CPU accelerator accepts both.
ALWAYS_SUPPORTED = ("bf16", "fp32")


def cpu_flags(cpuinfo: Path | None = None) -> frozenset[str] | None:
    """The CPU feature flags of the first processor in `cpuinfo` (default /proc/cpuinfo); None where
    there is no flags line (not Linux, or not x86: ARM names them "Features")."""
    try:
        text = (cpuinfo or CPUINFO).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return None


def accelerator_fp16_supported() -> bool:
    """DeepSpeed's own answer: a CUDA device (fp16 everywhere), else the CPU accelerator's check.

    Imports torch: call it only when the CPU flags cannot settle the question.
    """
    import torch

    if torch.cuda.is_available():
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN: DeepSpeed answers False too
        return False


@functools.cache
def fp16_supported() -> bool:
    """Whether DeepSpeed on this machine accepts `precision: fp16` (cached: hardware does not change)."""
    flags = cpu_flags()
    if flags is not None and flags & FP16_CPU_FLAGS:
        return True
    return accelerator_fp16_supported()


def precision_supported(precision: str) -> bool:
    """Whether a local job can train in `precision` (`bf16`, `fp16` or `fp32`) on this machine."""
    return precision in ALWAYS_SUPPORTED or (precision == "fp16" and fp16_supported())


def precision_problem(precision: str) -> str | None:
    """Why a local job cannot use `precision` here and what to use instead, or None if it can."""
    if precision_supported(precision):
        return None
    return (f"training.precision: {precision} is not supported on this machine: without a GPU, DeepSpeed's CPU "
            "accelerator needs a CPU with AVX512-FP16 or AVX-NE-CONVERT for fp16 (workers would fail with "
            f"'Type fp16 is not supported on your device'); use {' or '.join(ALWAYS_SUPPORTED)} here, "
            "or keep fp16 for a GPU target (target: kubernetes)")
