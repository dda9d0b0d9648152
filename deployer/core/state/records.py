"""Deployment records: the versioned schema, its migrations, and reconciling with the engine.

A record never holds an API key, only its path. Where records live is a RecordStore
(deployer.core.state.store); deployer.adapters.state_store keeps one JSON file per deployment,
read bounded and checked field by field (record_fields): a bad file is one StateFileInvalid, and
`ps` lists it as invalid instead of failing.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from deployer.core.errors import InvalidRequest, StateFileInvalid
from deployer.core.serve.containers import ContainerInfo
from deployer.core.state.record_fields import NAME_RE, FieldInvalid, check_fields
from deployer.core.untrusted import DEPLOYMENT_NAME_HINT, printable, shown

SCHEMA_VERSION = 1
_NAME_RE = NAME_RE

Runtime = Literal["container", "native"]
Status = Literal[
    "running", "starting", "healthy", "unhealthy", "exited", "gone", "orphan", "unknown", "invalid"
]


@dataclass
class DeploymentRecord:
    """What deployer remembers about one deployment."""

    name: str
    model: str
    quant: str
    backend: str  # llamacpp | ollama
    runtime: Runtime
    endpoint: str  # e.g. http://127.0.0.1:18080
    port: int
    created_at: str  # ISO 8601, UTC
    container_id: str | None = None
    pid: int | None = None
    image: str | None = None
    api_key_path: str | None = None  # the key's file, never the key
    files: list[str] = field(default_factory=list)  # model files the deployment serves
    networks: list[str] = field(default_factory=list)  # created by this deployment
    volumes: list[str] = field(default_factory=list)  # created by this deployment
    log_path: str | None = None  # native runtime: where the server logs
    profile: str | None = None  # the hardware profile id deploy planned for
    bench: dict[str, Any] | None = None  # the last `deployer bench` summary (record_fields)
    adapters: list[dict[str, Any]] = field(default_factory=list)  # LoRA: ref, path, scale
    schema_version: int = SCHEMA_VERSION

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def iso_seconds(moment: datetime) -> str:
    """`moment` as ISO 8601 with seconds (a record's created_at)."""
    return moment.isoformat(timespec="seconds")


def check_name(name: str) -> str:
    """A deployment name usable as a file and container name."""
    if not _NAME_RE.fullmatch(name):
        raise InvalidRequest(
            f"invalid deployment name {shown(name)}",
            DEPLOYMENT_NAME_HINT,
        )
    return name


# Each entry upgrades a raw record from version N to N+1; add one when the schema changes.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def migrate(raw: dict[str, Any], *, path: str = "<record>") -> dict[str, Any]:
    """Bring a raw record up to SCHEMA_VERSION; newer or unknown versions are refused."""
    version = raw.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise StateFileInvalid(path, f"unknown schema version {shown(version)}")
    if version > SCHEMA_VERSION:
        raise StateFileInvalid(path, f"schema version {version} is newer than this deployer's")
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise StateFileInvalid(path, f"no migration from schema version {version}")
        try:
            raw = step(dict(raw))
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFileInvalid(path, f"cannot migrate from version {version} ({exc})") from None
        version += 1
        raw["schema_version"] = version
    return raw


def record_from_dict(
    raw: dict[str, Any], *, path: str = "<record>", expected_name: str | None = None
) -> DeploymentRecord:
    """A record from its JSON form, migrated, every field checked; unknown keys are refused."""
    raw = migrate(raw, path=path)
    try:
        checked = check_fields(raw, expected_name=expected_name)
    except FieldInvalid as exc:
        raise StateFileInvalid(path, str(exc)) from None
    return DeploymentRecord(**checked)


@dataclass(frozen=True)
class RecordScan:
    """Every record file: the valid records, and one error per file that is not one."""

    records: list[DeploymentRecord]
    invalid: list[StateFileInvalid]


def invalid_name(error: StateFileInvalid) -> str:
    """The deployment name an invalid record file stands for: its file name less `.json`."""
    base = posixpath.basename(error.path)
    name = base[: -len(".json")] if base.endswith(".json") else base
    return printable(name)  # a file name may hold escape sequences


@dataclass(frozen=True)
class DeploymentStatus:
    """A record and/or a container, and what state they are in together."""

    name: str
    status: Status
    record: DeploymentRecord | None
    container: ContainerInfo | None
    invalid: StateFileInvalid | None = None  # status "invalid": its record file cannot be used

    @property
    def started_at(self) -> str | None:
        """When the server started (container start, else the record's creation)."""
        if self.container is not None:
            return self.container.started_at
        return self.record.created_at if self.record is not None else None


def _container_status(c: ContainerInfo) -> Status:
    if c.status == "running":
        if c.health == "healthy":
            return "healthy"
        if c.health == "unhealthy":
            return "unhealthy"
        return "starting" if c.health == "starting" else "running"
    if c.status == "restarting":
        return "unhealthy"  # crash loop under the restart policy
    if c.status == "created":
        return "starting"
    return "running" if c.status == "paused" else "exited"


def reconcile(
    records: Iterable[DeploymentRecord],
    containers: Iterable[ContainerInfo] | None,
    *,
    pid_alive: Callable[[int], bool] | None = None,
    invalid: Iterable[StateFileInvalid] = (),
) -> list[DeploymentStatus]:
    """Status per deployment name, sorted.

    A container record whose container is missing is `gone`; a labelled container with no
    record is an `orphan`. `containers=None` means the engine could not be asked: container
    records are then `unknown`. Native records are `running` while their pid lives, else `gone`.
    A record file that cannot be read is `invalid` (with its container, if one has its name).
    """
    by_name: dict[str, ContainerInfo] = {}
    for c in containers or []:
        by_name.setdefault(c.deployment, c)
    out: list[DeploymentStatus] = []
    seen: set[str] = set()
    for r in records:
        seen.add(r.name)
        if r.runtime == "native":
            alive = r.pid is not None and pid_alive is not None and pid_alive(r.pid)
            out.append(DeploymentStatus(r.name, "running" if alive else "gone", r, None))
            continue
        if containers is None:
            out.append(DeploymentStatus(r.name, "unknown", r, None))
            continue
        found = by_name.get(r.name)
        if found is None:
            out.append(DeploymentStatus(r.name, "gone", r, None))
        else:
            out.append(DeploymentStatus(r.name, _container_status(found), r, found))
    for bad in invalid:
        name = invalid_name(bad)
        seen.add(name)
        out.append(DeploymentStatus(name, "invalid", None, by_name.get(name), bad))
    for name, c in by_name.items():
        if name not in seen:
            out.append(DeploymentStatus(name, "orphan", None, c))
    return sorted(out, key=lambda s: s.name)


def uptime_s(started_at: str | None, now: datetime) -> float | None:
    """Seconds since an ISO 8601 time (Docker's nanosecond timestamps included)."""
    if not started_at:
        return None
    text = started_at.replace("Z", "+00:00")
    # Docker writes nanoseconds; fromisoformat takes at most microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        then = datetime.fromisoformat(text)
    except ValueError:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return max(0.0, (now - then).total_seconds())


@dataclass(frozen=True)
class PurgeResult:
    """What --purge deleted and what it kept, with why."""

    deleted: list[str]
    kept: list[tuple[str, str]]  # (path, reason)
