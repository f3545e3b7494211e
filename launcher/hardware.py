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

bf16 is accepted everywhere but fast only where oneDNN has bf16 kernels: PyTorch's
`mkldnn_check_low_precision` (aten/src/ATen/native/mkldnn/Utils.h) states "bf16 path needs the cpu
support avx_ne_convert or avx512bw, avx512vl and avx512dq" (`mkldnn_bf16_device_check` ->
`ideep::has_bf16_type_support`). Elsewhere (an AMD EPYC of the Zen 3 generation: AVX2 only) bf16
matrix products fall back to PyTorch's generic kernels: llama-tiny's forward and backward took 11 to
14 times as long as in fp32 there (2,272 and 2,479 against 199 and 178 ms per micro-batch of 4 x 64
tokens, one thread, two runs). A local job still runs, and `precision_note` (through
`launcher.support.local_run_notes`) says so before any worker starts.
"""

from __future__ import annotations

import functools
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")
# The ISA extensions oneDNN needs for fp16 on x86-64, as Linux names them in /proc/cpuinfo.
FP16_CPU_FLAGS = frozenset({"avx512_fp16", "avx_ne_convert"})
# What a job may use instead, in the order to suggest it. DeepSpeed's CPU accelerator accepts both.
ALWAYS_SUPPORTED = ("bf16", "fp32")
# Either set of extensions gives oneDNN bf16 kernels on x86-64 (PyTorch's `mkldnn_check_low_precision`).
BF16_CPU_FLAG_SETS = (frozenset({"avx512bw", "avx512vl", "avx512dq"}), frozenset({"avx_ne_convert"}))


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


def _cuda_or_onednn(check: str) -> bool:
    """True with a CUDA device, else oneDNN's answer `torch.ops.mkldnn.<check>()` for this CPU
    (False in a torch build without oneDNN). Imports torch: call it only when the CPU flags cannot
    settle the question."""
    import torch

    if torch.cuda.is_available():
        return True
    try:
        return bool(getattr(torch.ops.mkldnn, check)())
    except (AttributeError, RuntimeError):
        return False


def accelerator_fp16_supported() -> bool:
    """DeepSpeed's own answer: a CUDA device (fp16 everywhere), else the CPU accelerator's check."""
    return _cuda_or_onednn("_is_mkldnn_fp16_supported")


@functools.cache
def fp16_supported() -> bool:
    """Whether DeepSpeed on this machine accepts `precision: fp16` (cached: hardware does not change)."""
    flags = cpu_flags()
    if flags is not None and flags & FP16_CPU_FLAGS:
        return True
    return accelerator_fp16_supported()


def accelerator_bf16_native() -> bool:
    """PyTorch's own answer: a CUDA device, else whether oneDNN has bf16 kernels for this CPU."""
    return _cuda_or_onednn("_is_mkldnn_bf16_supported")


@functools.cache
def bf16_native() -> bool:
    """Whether bf16 training runs on real bf16 kernels here rather than PyTorch's generic fallback
    (cached: hardware does not change)."""
    flags = cpu_flags()
    if flags is not None and any(needed <= flags for needed in BF16_CPU_FLAG_SETS):
        return True
    if flags is not None and not nvidia_gpu_present():
        return False  # settled without importing torch: no GPU would take the CPU's place
    return accelerator_bf16_native()


def nvidia_gpu_present() -> bool:
    """Whether the NVIDIA driver lists a GPU (it creates /proc/driver/nvidia/gpus/<bus id> per device)."""
    try:
        return NVIDIA_GPUS.is_dir() and any(NVIDIA_GPUS.iterdir())
    except OSError:
        return False


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


def precision_note(precision: str) -> str | None:
    """What a local job in `precision` should know before it starts on this machine, or None.

    bf16 without oneDNN's kernels runs, but slowly; fp32 is the faster choice there.
    """
    if precision != "bf16" or bf16_native():
        return None
    return ("training.precision: bf16 runs without bf16 kernels on this CPU (oneDNN needs AVX512BW/VL/DQ or "
            "AVX-NE-CONVERT), so PyTorch falls back to generic ones: a llama-tiny micro-batch took 11 to 14 "
            "times as long as in fp32. Use precision: fp32 for local runs on this machine; keep bf16 for GPUs")
