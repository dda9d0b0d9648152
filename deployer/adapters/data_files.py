"""Where shipped data (profiles, catalog, templates), user overrides and state live, and the
real `DataSource` (`deployer/core/data_source.py`) that reads the data files from there."""

from __future__ import annotations

import os
from collections.abc import Iterator
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from platformdirs import user_config_path, user_data_path

from deployer.core.data_source import DataKind
from deployer.core.errors import InvalidDataFile

_REPO_ROOT = Path(__file__).resolve().parents[2]

# Each kind of data file: its shipped folder, and its folder under the user's config dir.
_FOLDERS: dict[DataKind, tuple[str, str]] = {
    "profiles": ("profiles", "profiles"),
    "catalog": ("catalog", "models"),
    "prices": ("prices", "prices"),
}


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


def iter_yaml_files(folder: Traversable | Path) -> Iterator[tuple[str, str]]:
    """Yield (source name, text) for each *.yaml file in `folder`, sorted by name."""
    # Imported here: `deployer profiles list` reads its memo without loading yaml or pydantic.
    from deployer.core.datafiles import MAX_FILE_BYTES

    for entry in yaml_files(folder):
        source = str(entry) if isinstance(entry, Path) else entry.name
        try:
            with entry.open("r", encoding="utf-8") as f:
                text = f.read(MAX_FILE_BYTES + 1)  # never more, whatever the file's size
        except UnicodeDecodeError as exc:
            raise InvalidDataFile(source, None, f"not UTF-8 text ({exc.reason})") from exc
        except OSError as exc:
            raise InvalidDataFile(source, None, f"cannot read: {exc.strerror or exc}") from exc
        yield source, text


class PackageData:
    """The real DataSource: shipped files from the package (or the source tree), the user's
    from the config dir, read when asked (so DEPLOYER_CONFIG_DIR is read at that moment)."""

    def yaml_texts(self, kind: DataKind) -> Iterator[tuple[str, str]]:
        """Shipped files of `kind` sorted by name, then the user's."""
        shipped, user = _FOLDERS[kind]
        yield from iter_yaml_files(data_dir(shipped))
        yield from iter_yaml_files(config_dir() / user)

    def template_text(self, name: str) -> str:
        """The shipped template `name`, a path relative to templates/."""
        node = data_dir("templates")
        for part in name.split("/"):
            node = node / part
        return node.read_text(encoding="utf-8")
