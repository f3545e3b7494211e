"""Device memory of common accelerators, used when a spec names `resources.gpu_type`."""

from __future__ import annotations

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
    "MI250X": 128,
}
