"""What `ps` and `logs` decide: records reconciled with containers and native servers, and
which log a deployment's lines come from."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from deployer.core.errors import DeploymentGone, DeploymentNotFound, EngineUnavailable
from deployer.core.state.records import DeploymentRecord, DeploymentStatus, reconcile

if TYPE_CHECKING:
    from deployer.core.serve.containers import ContainerEngine
    from deployer.core.state.store import RecordStore


class NativeServers(Protocol):
    """The llama-server processes deploy started on this machine."""

    def alive(self, record: DeploymentRecord) -> bool:
        """Whether the record's pid is provably the server deploy started."""
        ...

    def health(self, endpoint: str) -> str:
        """A running server's /health: healthy, starting or unhealthy."""
        ...

    def stop(self, record: DeploymentRecord, *, timeout_s: float) -> str:
        """Stop the record's server if it is ours; what was done, as a line for the user."""
        ...

    def log_path(self, name: str) -> Path:
        """The log file deploy writes for `name`."""
        ...


@dataclass(frozen=True)
class StatusScan:
    """Every deployment's status, and a warning when the engine could not be asked."""

    statuses: list[DeploymentStatus]
    warning: str | None = None


def current_statuses(
    records: RecordStore, engine: ContainerEngine, natives: NativeServers, *, need_engine: bool
) -> StatusScan:
    """Records reconciled with labelled containers; without an engine only if allowed."""
    scan = records.scan()
    warning = None
    try:
        containers = engine.list_deployer_containers()
    except EngineUnavailable as exc:
        has_containers = any(r.runtime == "container" for r in scan.records)
        if need_engine and has_containers:
            raise
        warning = exc.message() if has_containers else None
        containers = None
    by_pid = {r.pid: r for r in scan.records if r.runtime == "native" and r.pid is not None}
    statuses = reconcile(
        scan.records,
        containers,
        pid_alive=lambda pid: natives.alive(by_pid[pid]),
        invalid=scan.invalid,
    )
    return StatusScan([_native_health(st, natives) for st in statuses], warning)


def _native_health(st: DeploymentStatus, natives: NativeServers) -> DeploymentStatus:
    """A running native server's /health: healthy (200), starting (503) or unhealthy."""
    if st.record is None or st.record.runtime != "native" or st.status != "running":
        return st
    return replace(st, status=natives.health(st.record.endpoint))  # type: ignore[arg-type]


def find(name: str, statuses: list[DeploymentStatus]) -> DeploymentStatus:
    """The status of `name`; its StateFileInvalid, or DeploymentNotFound with close names."""
    for st in statuses:
        if st.name == name:
            if st.invalid is not None:
                raise st.invalid
            return st
    names = [s.name for s in statuses]
    raise DeploymentNotFound(name, difflib.get_close_matches(name, names, n=3))


@dataclass(frozen=True)
class LogSource:
    """Where a deployment's log is read: a native server's file or a container's output."""

    file: Path | None = None
    container_id: str | None = None


def log_source(name: str, st: DeploymentStatus, natives: NativeServers) -> LogSource:
    """The log `logs` prints for `name`; DeploymentGone when there is none to read."""
    r = st.record
    if r is not None and r.runtime == "native":
        if not r.log_path:
            raise DeploymentGone(name, "its record names no log file")
        if Path(r.log_path) != natives.log_path(r.name):
            # a record is a file another local user may have written: print only the log
            # deploy writes for this name, never a file the record points elsewhere
            raise DeploymentGone(name, "its record names a log file deploy did not write")
        return LogSource(file=Path(r.log_path))
    if st.container is None:
        raise DeploymentGone(name, "its container was removed")
    return LogSource(container_id=st.container.id)
