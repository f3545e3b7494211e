"""Kubernetes resource quantities ("500m", "64Gi", "1.5e3") parsed into numbers."""

from __future__ import annotations

import re

_QUANTITY = re.compile(r"^(?P<number>[+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
_FACTORS = {
    None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}


def parse_quantity(value: str | int | float) -> float:
    """Return the quantity's value in base units (cores or bytes); ValueError on bad form."""
    if isinstance(value, bool):
        raise ValueError(f"expected a Kubernetes quantity such as '64Gi' or '500m', got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"expected a Kubernetes quantity such as '64Gi' or '500m', got {value!r}")
    return float(match.group("number")) * _FACTORS[match.group("suffix")]


def format_bytes(n: float) -> str:
    """Human-readable binary size: 1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
