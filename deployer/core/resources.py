"""Where shipped data (profiles, catalog, templates) and user overrides live."""

from __future__ import annotations

import os
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from platformdirs import user_config_path, user_data_path

_REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir(name: str) -> Traversable:
    """Shipped data folder `name` (profiles, catalog, templates): wheel first, then source tree."""
    packaged = resources.files("deployer") / "_data" / name
    if packaged.is_dir():
        return packaged
    return _REPO_ROOT / name


def config_dir() -> Path:
    """User config dir (XDG); DEPLOYER_CONFIG_DIR overrides it."""
    override = os.environ.get("DEPLOYER_CONFIG_DIR")
    return Path(override) if override else user_config_path("deployer")


def state_dir() -> Path:
    """User data dir for state records; DEPLOYER_STATE_DIR overrides it."""
    override = os.environ.get("DEPLOYER_STATE_DIR")
    return Path(override) if override else user_data_path("deployer")


def yaml_files(folder: Traversable | Path) -> list[Traversable]:
    """The *.yaml / *.yml files directly in `folder`, sorted by name; none when it is no folder."""
    if not folder.is_dir():
        return []
    entries = (e for e in folder.iterdir() if e.name.endswith((".yaml", ".yml")) and e.is_file())
    return sorted(entries, key=lambda e: e.name)
