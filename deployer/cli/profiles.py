"""`deployer profiles` commands: list and show hardware profiles."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from deployer.cli.app import app
from deployer.cli.errors import run_guarded
from deployer.cli.output import console, print_json
from deployer.cli.params import JsonOpt
from deployer.core.profiles import Profile, get_profile, load_profiles
from deployer.core.units import GIB, MIB

profiles_app = typer.Typer(
    name="profiles", help="Hardware profiles: GPUs, Macs and CPU machines.", no_args_is_help=True
)
app.add_typer(profiles_app, name="profiles")

ProfileIdArg = Annotated[str, typer.Argument(help="Profile id (deployer profiles list).")]


def profile_json(profile: Profile) -> dict[str, Any]:
    """A profile as JSON data: its fields plus the computed per-device budget."""
    data = profile.model_dump(mode="json")
    data["device_budget_bytes"] = profile.device_budget_bytes()
    return data


def _devices(profile: Profile) -> str:
    if profile.gpu is not None:
        return f"{profile.gpu.count} x {profile.gpu.memory_mib / 1024:.1f} GiB"
    if profile.kind == "apple":
        return f"{profile.device_budget_bytes() / GIB:.0f} GiB unified"
    return "-"


def _price(profile: Profile) -> str:
    return f"{profile.price.usd_per_hour:.2f}" if profile.price else "-"


def _list_table(profiles: list[Profile]) -> Table:
    table = Table()
    table.add_column("id", no_wrap=True)
    table.add_column("name")
    table.add_column("kind")
    for title in ("devices x memory", "GB/s", "host RAM", "$/h"):
        table.add_column(title, justify="right")
    for p in profiles:
        table.add_row(
            p.id,
            p.name,
            p.kind,
            _devices(p),
            f"{p.device_bandwidth_gbps():g}",
            f"{p.host_ram_gib:g} GiB",
            _price(p),
        )
    return table


def _show_table(profile: Profile) -> Table:
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
            ("compute capability", gpu.compute_capability or "-"),
            ("flash attention", "yes" if gpu.flash_attention else "no"),
        ]
    if profile.unified_memory is not None:
        um = profile.unified_memory
        rows += [
            ("GPU wired fraction", f"{um.gpu_wired_fraction:g} of RAM"),
            ("raise the limit", um.raise_hint),
        ]
    rows += [
        ("device budget", f"{profile.device_budget_bytes() / MIB:.0f} MiB per device"),
        ("host", f"{profile.cpu_cores} CPUs, {profile.host_ram_gib:g} GiB RAM"),
        ("host bandwidth", f"{profile.cpu_bandwidth_gbps:g} GB/s"),
        ("cpu flags", " ".join(profile.cpu_flags) or "-"),
    ]
    for backend, spec in profile.runtimes.items():
        rows.append((f"runtime {backend}", f"{spec.mode} {spec.image or ''}".strip()))
    if profile.price is not None:
        pr = profile.price
        rows.append(("price", f"${pr.usd_per_hour:g}/h, {pr.offering} ({pr.as_of}, {pr.source})"))
    rows += [("notes", profile.notes), ("source", profile.source)]
    for key, value in rows:
        table.add_row(key, value)
    return table


@profiles_app.command("list")
def list_profiles(json_: JsonOpt = False) -> None:
    """List every hardware profile (shipped and yours)."""

    def body() -> None:
        profiles = sorted(load_profiles().values(), key=lambda p: (p.kind, p.id))
        if json_:
            print_json([profile_json(p) for p in profiles])
        else:
            console.print(_list_table(profiles))

    run_guarded(body)


@profiles_app.command("show")
def show_profile(profile_id: ProfileIdArg, json_: JsonOpt = False) -> None:
    """Show one hardware profile in full."""

    def body() -> None:
        profile = get_profile(profile_id)
        if json_:
            print_json(profile_json(profile))
        else:
            console.print(_show_table(profile))

    run_guarded(body)
