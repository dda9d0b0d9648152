"""Deployment records as files: the RecordStore deploy, ps, logs and down use.

Files live in `state_dir()/deployments/<name>.json`, written atomically (temp file in the same
folder, fsync, `os.replace`) with mode 0600. Reading one is bounded (deployer.adapters.statefile)
and checks every field (deployer.core.state.records): a bad file is one StateFileInvalid.
"""

from __future__ import annotations

from pathlib import Path

from deployer.adapters.data_files import state_dir
from deployer.adapters.statefile import read_state_json, write_state_json
from deployer.core.errors import StateFileInvalid
from deployer.core.state.record_fields import NAME_RE
from deployer.core.state.records import (
    DeploymentRecord,
    RecordScan,
    check_name,
    record_from_dict,
)

MAX_REMEMBERED_PORTS = 256


class FileRecordStore:
    """Records under the state dir (deployer.core.state.store.RecordStore)."""

    def save(self, record: DeploymentRecord) -> str:
        """Write `record` atomically with mode 0600 and remember its port; its path."""
        return str(save_record(record))

    def load(self, name: str) -> DeploymentRecord | None:
        """The record of `name`, or None; StateFileInvalid when its file is not a valid record."""
        return load_record(name)

    def scan(self) -> RecordScan:
        """Every record file, sorted by name, with one error per invalid one."""
        return scan_records()

    def delete(self, name: str) -> bool:
        """Remove the record of `name`; False when there was none."""
        return delete_record(name)

    def remembered_ports(self) -> dict[str, int]:
        """The ports memory; empty when missing or invalid."""
        return remembered_ports()

    def record_path(self, name: str) -> str:
        """The file the record of `name` is (or would be) kept in."""
        return str(record_path(name))


def deployments_dir() -> Path:
    """Folder of the deployment records."""
    return state_dir() / "deployments"


def record_path(name: str) -> Path:
    """The record file of deployment `name`."""
    return deployments_dir() / f"{check_name(name)}.json"


def save_record(record: DeploymentRecord) -> Path:
    """Write `record` atomically with mode 0600 and remember its port; its path."""
    path = write_state_json(record_path(record.name), record.as_dict())
    remember_port(record.name, record.port)
    return path


def load_record(name: str) -> DeploymentRecord | None:
    """The record of `name`, or None; StateFileInvalid when its file is not a valid record."""
    path = record_path(name)
    try:
        return _parse(path)
    except FileNotFoundError:
        return None


def _parse(path: Path) -> DeploymentRecord:
    raw = read_state_json(path)
    if not isinstance(raw, dict):
        raise StateFileInvalid(str(path), "not a JSON object")
    return record_from_dict(raw, path=str(path), expected_name=path.name[: -len(".json")])


def scan_records() -> RecordScan:
    """Every record file, sorted by name (temp files of interrupted writes are ignored)."""
    folder = deployments_dir()
    if not folder.is_dir():
        return RecordScan([], [])
    records: list[DeploymentRecord] = []
    invalid: list[StateFileInvalid] = []
    for p in sorted(folder.glob("*.json")):
        if p.name.startswith("."):
            continue
        try:
            records.append(_parse(p))
        except StateFileInvalid as exc:
            invalid.append(exc)
        except FileNotFoundError:
            continue  # removed by a concurrent `down` since the listing
    return RecordScan(records, invalid)


def load_records() -> list[DeploymentRecord]:
    """Every valid record, sorted by name (scan_records also reports the invalid ones)."""
    return scan_records().records


def delete_record(name: str) -> bool:
    """Remove the record of `name`; False when there was none."""
    try:
        record_path(name).unlink()
    except FileNotFoundError:
        return False
    return True


def ports_path() -> Path:
    """The ports memory: deployment name -> the last port it published on, kept after `down`."""
    return state_dir() / "ports.json"


def remembered_ports() -> dict[str, int]:
    """The ports memory; empty when missing or invalid (it is only a preference)."""
    try:
        raw = read_state_json(ports_path())
    except (FileNotFoundError, StateFileInvalid):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {
        k: v
        for k, v in raw.items()
        if NAME_RE.fullmatch(k) and isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536
    }


def remember_port(name: str, port: int) -> None:
    """Remember `port` as `name`'s (the oldest names are forgotten past MAX_REMEMBERED_PORTS)."""
    ports = remembered_ports()
    ports.pop(name, None)
    ports[name] = port  # last written goes last: the oldest are first to be dropped
    kept = dict(list(ports.items())[-MAX_REMEMBERED_PORTS:])
    write_state_json(ports_path(), kept)
