"""Device memory of common accelerators, used when a spec names `resources.gpu_type`.

`GPU_MEMORY_GB` is the marketed size (what people write and what `gpu_type` validation lists);
`GPU_MEMORY_MIB` is the total the driver reports (nvidia-smi / rocm-smi), a little less, and
is what the planner budgets against.
"""

from __future__ import annotations

GiB = 2**30
MiB = 2**20

GPU_MEMORY_GB: dict[str, float] = {
    "B200": 192,
    "H200": 141,
    "H100-80GB": 80,
    "H100-94GB": 94,
    "GH200": 96,
    "A100-80GB": 80,
    "A100-40GB": 40,
    "L40S": 48,
    "L40": 48,
    "A10G": 24,
    "A10": 24,
    "L4": 24,
    "RTX4090": 24,
    "RTX3090": 24,
    "V100-32GB": 32,
    "V100-16GB": 16,
    "T4": 16,
    "MI300X": 192,
    # Kubernetes schedules each of an MI250X's two dies (GCDs) as one GPU of 64 GB.
    "MI250X": 64,
}

GPU_MEMORY_MIB: dict[str, int] = {
    "B200": 183_359,
    "H200": 143_771,
    "H100-80GB": 81_559,
    "H100-94GB": 95_830,
    "GH200": 97_871,
    "A100-80GB": 81_920,
    "A100-40GB": 40_960,
    "L40S": 46_068,
    "L40": 46_068,
    "A10G": 23_028,
    "A10": 23_028,
    "L4": 23_034,
    "RTX4090": 24_564,
    "RTX3090": 24_576,
    "V100-32GB": 32_510,
    "V100-16GB": 16_160,
    "T4": 15_360,
    "MI300X": 196_592,
    "MI250X": 65_520,
}


def device_memory_bytes(gpu_type: str | None, gpu_memory_gb: float | None) -> int | None:
    """Memory of one device in bytes, or None when the spec says neither.

    An explicit `gpu_memory_gb` wins over the table; it is read as GiB, the unit drivers
    report sizes in (an "80GB" card shows about 79.6 GiB).
    """
    if gpu_memory_gb is not None:
        return int(gpu_memory_gb * GiB)
    if gpu_type is not None:
        return GPU_MEMORY_MIB[gpu_type] * MiB
    return None


def device_name(gpu_type: str | None, gpu_memory_gb: float | None) -> str:
    """How plans name the device: the GPU type if known, else its size."""
    if gpu_memory_gb is not None:
        return f"{gpu_type} ({gpu_memory_gb:g} GiB)" if gpu_type else f"{gpu_memory_gb:g} GiB device"
    return gpu_type or "unknown device"
