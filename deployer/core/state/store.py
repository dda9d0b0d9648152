"""Where deployment records live: the seam core asks through (deployer.adapters.state_store
keeps them as files; tests keep them in a dict)."""

from __future__ import annotations

from typing import Protocol

from deployer.core.state.records import DeploymentRecord, RecordScan


class RecordStore(Protocol):
    """Saves, loads, lists and deletes deployment records, and remembers each name's port."""

    def save(self, record: DeploymentRecord) -> str:
        """Write `record` (replacing one of its name) and remember its port; where it lives."""
        ...

    def load(self, name: str) -> DeploymentRecord | None:
        """The record of `name`, or None; StateFileInvalid when it cannot be used."""
        ...

    def scan(self) -> RecordScan:
        """Every record, sorted by name, and one error per record that is not valid."""
        ...

    def delete(self, name: str) -> bool:
        """Remove the record of `name`; False when there was none."""
        ...

    def remembered_ports(self) -> dict[str, int]:
        """Deployment name -> the last port it published on (kept after `down`)."""
        ...
