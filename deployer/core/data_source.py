"""The `DataSource` seam: shipped data (profiles, catalog, API prices, templates) and the user's overrides,
handed to core as texts.

Where those files live (the package, the source tree, the XDG config dir, DEPLOYER_CONFIG_DIR)
is the adapter's business (`deployer/adapters/data_files.py`). The CLI installs the real source
once at start (`deployer/cli/wiring.py` `install_data_source`); `load_profiles`,
`load_catalog` and the template loaders read through the installed one unless handed another.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, Protocol

DataKind = Literal["profiles", "catalog", "prices"]


class DataSource(Protocol):
    """Read-only data files as texts."""

    def yaml_texts(self, kind: DataKind) -> Iterator[tuple[str, str]]:
        """(source name, text) of each YAML file of `kind`: the shipped ones sorted by name,
        then the user's (a later one with the same id overrides). A file that cannot be read
        raises InvalidDataFile naming it, when the iteration reaches it."""
        ...

    def template_text(self, name: str) -> str:
        """The shipped template `name` ("compose/compose.yaml.j2", "ansible/deploy.yml.j2")."""
        ...


_installed: DataSource | None = None


def install_data_source(source: DataSource) -> None:
    """Make `source` the one core reads through when no source is handed to it."""
    global _installed
    _installed = source


def data_source() -> DataSource:
    """The installed source; a program that uses core without the CLI installs one first."""
    if _installed is None:
        raise RuntimeError(
            "no DataSource installed: call deployer.cli.wiring.install_data_source() first"
        )
    return _installed
