"""`deployer profiles` commands: list and show hardware profiles."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from deployer.adapters import filememo
from deployer.adapters.data_files import config_dir, data_dir, yaml_files
from deployer.cli.app import app
from deployer.cli.errors import run_guarded
from deployer.cli.output import console, print_json, print_rows
from deployer.cli.params import JsonOpt

if TYPE_CHECKING:
    # pydantic and YAML load only when a profile must be validated (see profiles_data).
    from deployer.core.hardware.profiles import Profile

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


def _profile_files() -> list[Path] | None:
    """Every profile file, shipped and the user's; None when the shipped ones are not plain files
    (a zipped install), so nothing is memoised."""
    shipped = data_dir("profiles")
    if not isinstance(shipped, Path):
        return None
    folders = (shipped, config_dir() / "profiles")
    return [p for folder in folders for p in yaml_files(folder) if isinstance(p, Path)]


# What the list table reads: a memo without them (hand-edited, or from a development build
# whose JSON differed) is ignored and the profiles are validated again.
_LIST_KEYS = frozenset(
    {
        "id",
        "name",
        "kind",
        "gpu",
        "price",
        "cpu_bandwidth_gbps",
        "host_ram_gib",
        "device_budget_bytes",
    }
)


def profiles_data() -> list[dict[str, Any]]:
    """Every profile as JSON data, sorted by kind then id.

    Validated from the YAML files, or recalled from the memo of the last validation while no
    profile file was added, removed or changed since (saves ~0.3 s of imports and validation).
    """
    files = _profile_files()
    # The code that reads, validates and serialises them is part of the key (found by path:
    # importing it would load pydantic, which the memo exists to avoid).
    package = Path(__file__).parents[1]
    code = [
        Path(__file__),
        package / "adapters" / "data_files.py",
        package / "core" / "hardware" / "profiles.py",
        package / "core" / "datafiles.py",
    ]
    identity = None if files is None else filememo.file_identity([*files, *code], salt="profiles")
    cached = filememo.recall("profiles", identity)
    if isinstance(cached, list) and all(
        isinstance(d, dict) and d.keys() >= _LIST_KEYS for d in cached
    ):
        return cached
    from deployer.core.hardware.profiles import load_profiles

    data = [profile_json(p) for p in sorted(load_profiles().values(), key=lambda p: (p.kind, p.id))]
    filememo.remember("profiles", identity, data)
    return data


@profiles_app.command("list")
def list_profiles(json_: JsonOpt = False) -> None:
    """List every hardware profile (shipped and yours)."""

    def body() -> None:
        profiles = profiles_data()
        if json_:
            print_json(profiles)
        else:
            from deployer.cli.profiles_view import LIST_HEADERS, list_rows

            print_rows(LIST_HEADERS, list_rows(profiles), right=(3, 4, 5, 6))

    run_guarded(body)


@profiles_app.command("show")
def show_profile(profile_id: ProfileIdArg, json_: JsonOpt = False) -> None:
    """Show one hardware profile in full."""

    def body() -> None:
        from deployer.core.hardware.profiles import get_profile

        profile = get_profile(profile_id)
        if json_:
            print_json(profile_json(profile))
        else:
            from deployer.cli.profiles_view import show_table

            console.print(show_table(profile))

    run_guarded(body)
