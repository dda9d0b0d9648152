"""API key files: the seam core asks through (deployer.adapters.secrets writes them under the
state dir; tests keep them in memory). A record holds a key's path, never the key."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class SecretStore(Protocol):
    """Generates, reads and removes the API key file of a deployment."""

    def write_api_key(self, name: str, *, for_container: bool = True) -> Path:
        """Generate `name`'s key and store it; KeyFileExists when one is already there."""
        ...

    def api_key_path(self, name: str) -> Path:
        """Where `name`'s key file is (or would be) kept."""
        ...

    def read_api_key(self, path: Path) -> str:
        """The key in the key file at `path`."""
        ...

    def discard(self, path: Path) -> None:
        """Remove the key file at `path` that write_api_key made, with its folder."""
        ...
