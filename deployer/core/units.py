"""Byte units. Bytes internally; MiB/GiB/GB only at the edge, labelled."""

from __future__ import annotations

MIB = 1 << 20
GIB = 1 << 30
GB = 1_000_000_000


def fmt_bytes(n: int | float) -> str:
    """Human form in binary units, labelled (llama.cpp logs MiB/GiB too)."""
    value = float(n)
    if abs(value) >= GIB:
        return f"{value / GIB:.2f} GiB"
    return f"{value / MIB:.1f} MiB"
