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


# Docker's and Kubernetes' suffixes: K/M/G (docker reads them as 1024-based) and Ki/Mi/Gi.
_SUFFIXES = {"": 1, "b": 1, "k": 1 << 10, "m": MIB, "g": GIB, "t": 1 << 40}


def parse_bytes(text: str) -> int | None:
    """'300M', '1.5G', '512Mi', '1GiB', '1048576' as bytes (1024-based); None when not a size."""
    s = text.strip().lower().removesuffix("ib").removesuffix("i")
    if s.endswith("b") and len(s) > 1 and not s[-2].isdigit():
        s = s[:-1]
    num, unit = s, ""
    if s and s[-1] in _SUFFIXES:
        num, unit = s[:-1], s[-1]
    try:
        value = float(num)
    except ValueError:
        return None
    if not value > 0 or value == float("inf") or value != value:
        return None
    n = int(value * _SUFFIXES[unit])
    return n if 0 < n < 1 << 60 else None
