"""What `deployer profiles` prints: the list of profiles and one profile in full."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deployer.cli.output import cells
from deployer.core.units import GIB, MIB

if TYPE_CHECKING:  # rich.table loads only for `show`: `list` prints plain rows
    from rich.table import Table

    from deployer.core.hardware.profiles import Profile


def _devices(d: dict[str, Any]) -> str:
    if d["gpu"] is not None:
        return f"{d['gpu']['count']} x {d['gpu']['memory_mib'] / 1024:.1f} GiB"
    if d["kind"] == "apple":
        return f"{d['device_budget_bytes'] / GIB:.0f} GiB unified"
    return "-"


def list_rows(profiles: list[dict[str, Any]]) -> list[list[str]]:
    """One row a profile, in LIST_HEADERS' order."""
    rows = []
    for d in profiles:
        gpu, price = d["gpu"], d["price"]
        bandwidth = gpu["bandwidth_gbps"] if gpu else d["cpu_bandwidth_gbps"]
        rows.append(
            [
                d["id"],
                d["name"],
                d["kind"],
                _devices(d),
                f"{bandwidth:g}",
                f"{d['host_ram_gib']:g} GiB",
                f"{price['usd_per_hour']:.2f}" if price else "-",
            ]
        )
    return rows


LIST_HEADERS = ("ID", "NAME", "KIND", "DEVICES x MEMORY", "GB/s", "HOST RAM", "$/h")


def _peak(flops: float, stated: bool, unit: float, name: str) -> str:
    return f"{flops / unit:g} {name}" + ("" if stated else " (derived: not in the profile)")


def show_table(profile: Profile) -> Table:
    """One profile in full: devices, budget, host, runtimes, price."""
    from rich.table import Table

    table = Table("field", "value", show_header=False)
    rows: list[tuple[str, str]] = [
        ("id", profile.id),
        ("name", profile.name),
        ("kind", profile.kind),
    ]
    if profile.gpu is not None:
        gpu = profile.gpu
        rows += [
            ("gpu", f"{gpu.count} x {gpu.name}"),
            ("memory per device", f"{gpu.memory_mib} MiB (reserve {gpu.reserve_mib} MiB)"),
            ("bandwidth", f"{gpu.bandwidth_gbps:g} GB/s"),
            ("peak FP16", _peak(*profile.device_peak_flops(), 1e12, "TFLOPS")),
            ("compute capability", gpu.compute_capability or "-"),
            ("flash attention", "yes" if gpu.flash_attention else "no"),
        ]
    if profile.unified_memory is not None:
        um = profile.unified_memory
        rows += [
            ("GPU wired fraction", f"{um.gpu_wired_fraction:g} of RAM"),
            ("GPU peak FP16", _peak(*profile.device_peak_flops(), 1e12, "TFLOPS")),
            ("raise the limit", um.raise_hint),
        ]
    rows += [
        ("device budget", f"{profile.device_budget_bytes() / MIB:.0f} MiB per device"),
        ("host", f"{profile.cpu_cores} CPUs, {profile.host_ram_gib:g} GiB RAM"),
        ("host bandwidth", f"{profile.cpu_bandwidth_gbps:g} GB/s"),
        ("host peak FP32", _peak(*profile.cpu_peak_flops(), 1e9, "GFLOPS")),
        ("cpu flags", " ".join(profile.cpu_flags) or "-"),
    ]
    for backend, spec in profile.runtimes.items():
        rows.append((f"runtime {backend}", f"{spec.mode} {spec.image or ''}".strip()))
    if profile.price is not None:
        pr = profile.price
        rows.append(("price", f"${pr.usd_per_hour:g}/h, {pr.offering} ({pr.as_of}, {pr.source})"))
    rows += [("notes", profile.notes), ("source", profile.source)]
    if profile.compute_source:
        rows.append(("compute source", profile.compute_source))
    for key, value in rows:
        table.add_row(*cells(key, value))
    return table
