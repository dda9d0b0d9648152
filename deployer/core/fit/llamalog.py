"""Parse what llama-server logs about the memory it allocates (the fit's ground truth)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from deployer.core.units import MIB

_BUFFER = re.compile(
    r"(?P<dev>[A-Za-z_][A-Za-z0-9_]*)\s+(?P<what>model|KV|compute|output|RS|DSV4 [a-z]+ state)"
    r"\s+buffer size\s*=\s*(?P<mib>[\d.]+)\s*MiB"
)
_OFFLOADED = re.compile(r"offloaded\s+(\d+)/(\d+)\s+layers to GPU")
_HOST_SUFFIXES = ("_Mapped", "_REPACK", "_Private")


def device_of(buffer_name: str) -> str:
    """Device a buffer belongs to: 'host' for CPU/*_Host buffers, else the device name."""
    name = buffer_name
    for suffix in _HOST_SUFFIXES:
        name = name.removesuffix(suffix)
    if name in ("CPU", "BLAS") or name.endswith("_Host"):
        return "host"
    return name


@dataclass
class LoggedBuffers:
    """Bytes per (device, component) as llama-server logged them."""

    buffers: dict[tuple[str, str], int] = field(default_factory=dict)
    offloaded_layers: int | None = None

    def get(self, device: str, component: str) -> int:
        """Bytes of one component on one device (0 when not logged)."""
        return self.buffers.get((device, component), 0)

    def cache(self, device: str) -> int:
        """KV cache plus recurrent state (RS) of one device: what the plan's kv_cache_bytes
        counts."""
        return self.get(device, "KV") + self.get(device, "RS")

    def total(self, device: str) -> int:
        """All logged buffers of one device."""
        return sum(v for (d, _), v in self.buffers.items() if d == device)


def parse_buffers(log: str) -> LoggedBuffers:
    """Sum the `<dev> <kind> buffer size = X MiB` lines of a llama-server log."""
    out = LoggedBuffers()
    for m in _BUFFER.finditer(log):
        # DeepSeek 4's compressor state is a recurrent state in all but name
        what = "RS" if m["what"].startswith("DSV4") else m["what"]
        key = (device_of(m["dev"]), what)
        out.buffers[key] = out.buffers.get(key, 0) + round(float(m["mib"]) * MIB)
    if (off := _OFFLOADED.search(log)) is not None:
        out.offloaded_layers = int(off.group(1))
    return out
