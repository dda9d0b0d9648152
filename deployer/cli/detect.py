"""`deployer detect`: what hardware this machine has and which profile fits it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from deployer.cli.app import app
from deployer.cli.errors import run_guarded
from deployer.cli.output import cells, console, print_json
from deployer.cli.params import JsonOpt
from deployer.core.units import GIB

if TYPE_CHECKING:  # probing and pydantic models load only when detect runs
    from deployer.core.hardware.detect import DetectedHardware, ProfileMatch


def detect_json(hw: DetectedHardware, found: ProfileMatch) -> dict[str, Any]:
    """The `detect --json` document."""
    return {
        "kind": hw.kind,
        "gpus": [g.model_dump(mode="json", exclude_none=True) for g in hw.gpus],
        "cpu": hw.cpu.model_dump(mode="json", exclude={"flags"}),
        "ram_bytes": hw.ram_bytes,
        "profile": found.profile.id,
        "match": found.match,
        "reason": found.reason,
        "closest_shipped": found.closest_shipped,
        "device_budget_bytes": found.profile.device_budget_bytes(),
    }


def _table(hw: DetectedHardware, found: ProfileMatch) -> Table:
    table = Table("field", "value", show_header=False)
    table.add_row(*cells("kind", hw.kind))
    for i, gpu in enumerate(hw.gpus):
        cc = f", compute {gpu.compute_capability}" if gpu.compute_capability else ""
        table.add_row(*cells(f"gpu {i}", f"{gpu.name}, {gpu.memory_bytes / GIB:.1f} GiB{cc}"))
    simd = [name for name, on in (("avx2", hw.cpu.avx2), ("avx512", hw.cpu.avx512)) if on]
    table.add_row(
        *cells(
            "cpu",
            f"{hw.cpu.model}, {hw.cpu.cores} cores / {hw.cpu.threads} threads"
            + (f" ({' '.join(simd)})" if simd else ""),
        )
    )
    table.add_row(*cells("ram", f"{hw.ram_bytes / GIB:.1f} GiB"))
    table.add_row(*cells("profile", f"{found.profile.id} ({found.match})"))
    table.add_row(*cells("why", found.reason))
    return table


@app.command()
def detect(json_: JsonOpt = False) -> None:
    """Detect this machine's GPUs, CPU and RAM, and the profile that matches them."""

    def body() -> None:
        from deployer.adapters.system_probe import probe_system
        from deployer.core.hardware.detect import detect_hardware, match_profile
        from deployer.core.hardware.profiles import load_profiles

        hw = detect_hardware(probe_system())
        found = match_profile(hw, load_profiles())
        if json_:
            print_json(detect_json(hw, found))
        else:
            console.print(_table(hw, found))

    run_guarded(body)
