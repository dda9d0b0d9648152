"""In-memory stand-ins for the seams core deploys through: a container engine, the record and
key stores, a clock that never waits. Each records what it was asked, so a test can check that
a failed deploy left nothing behind."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from deployer.core.errors import KeyFileExists, StateFileInvalid
from deployer.core.serve.containers import ContainerInfo, EngineInfo, MemoryUse, ProgressFn
from deployer.core.serve.specs import ContainerSpec, VolumeSpec
from deployer.core.state.records import DeploymentRecord, RecordScan

Step = Callable[[], None]


class MemoryEngine:
    """A container engine holding containers and volumes in dicts.

    `fail_run` raises before anything exists; `fail_after_create` raises once the container
    exists (a start that failed, or Ctrl-C while the engine was still working); `hide_for_s`
    keeps a container made that way out of listings until the clock has moved that far (the
    engine finishing a creation deploy was interrupted in). `on_wait` runs inside wait_healthy.
    `memory` is what memory_use reports (a cgroup at or under its limit).
    """

    def __init__(self, clock: MemoryClock | None = None) -> None:
        self.clock = clock or MemoryClock()
        self.containers: dict[str, ContainerInfo] = {}
        self.visible_from: dict[str, float] = {}
        self.volumes: dict[str, str] = {}  # volume -> deployment
        self.removed: list[str] = []
        self.fail_run: BaseException | None = None
        self.fail_after_create: BaseException | None = None
        self.hide_for_s = 0.0
        self.on_wait: Step | None = None
        self.fail_volume: BaseException | None = None
        self.memory = MemoryUse()
        self.specs: dict[str, ContainerSpec] = {}

    def engine_available(self) -> EngineInfo:
        """Always available."""
        return EngineInfo("memory", "1.0", "linux", "x86_64", "memory://")

    def run_container(self, *, spec: ContainerSpec) -> str:
        """Make the container (unless told to fail first); its id."""
        if self.fail_run is not None:
            raise self.fail_run
        cid = f"{len(self.containers) + len(self.removed) + 1:064x}"
        self.containers[cid] = ContainerInfo(
            id=cid,
            name=spec.name,
            image=spec.image,
            labels=dict(spec.labels),
            status="running",
            health="starting",
            started_at="2025-01-01T00:00:00Z",
        )
        self.visible_from[cid] = self.clock.monotonic() + self.hide_for_s
        self.specs[cid] = spec
        if self.fail_after_create is not None:
            raise self.fail_after_create
        return cid

    def wait_healthy(
        self,
        *,
        container_id: str,
        timeout_s: float,
        on_progress: ProgressFn | None = None,
        ready_url: str | None = None,
        poll_s: float = 0.5,
    ) -> None:
        """Healthy at once, unless `on_wait` raises."""
        if self.on_wait is not None:
            self.on_wait()

    def memory_use(self, *, container_id: str) -> MemoryUse:
        """What the test set in `memory`."""
        return self.memory

    def container_logs(self, *, container_id: str, tail: int, follow: bool) -> Iterator[str]:
        """No logs."""
        return iter(())

    def stop_and_remove(self, *, name_or_id: str, timeout_s: float = 10.0) -> bool:
        """Remove the container; False when there was none."""
        if self.containers.pop(name_or_id, None) is None:
            return False
        self.removed.append(name_or_id)
        return True

    def list_deployer_containers(self) -> list[ContainerInfo]:
        """Containers the engine would show now."""
        now = self.clock.monotonic()
        return [c for cid, c in self.containers.items() if self.visible_from[cid] <= now]

    def remove_network(self, *, name: str) -> bool:
        """No networks here."""
        return False

    def create_volume(self, *, spec: VolumeSpec) -> bool:
        """Make the volume; False when it existed."""
        if self.fail_volume is not None:
            raise self.fail_volume
        if spec.name in self.volumes:
            return False
        self.volumes[spec.name] = spec.labels.get("io.deployer.name", "")
        return True

    def remove_volume(self, *, name: str) -> bool:
        """Remove the volume; False when there was none."""
        return self.volumes.pop(name, None) is not None

    def list_deployer_volumes(self) -> dict[str, str]:
        """Volume name -> deployment name."""
        return dict(self.volumes)


@dataclass
class MemoryRecordStore:
    """Deployment records in a dict; `fail_save` makes the next save raise."""

    records: dict[str, DeploymentRecord] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    fail_save: BaseException | None = None
    invalid: list[StateFileInvalid] = field(default_factory=list)  # files scan cannot read

    def save(self, record: DeploymentRecord) -> str:
        """Keep `record` and its port."""
        if self.fail_save is not None:
            raise self.fail_save
        self.records[record.name] = record
        self.ports[record.name] = record.port
        return f"memory:{record.name}"

    def load(self, name: str) -> DeploymentRecord | None:
        """The record of `name`, or None."""
        return self.records.get(name)

    def scan(self) -> RecordScan:
        """Every record, sorted by name."""
        return RecordScan([self.records[n] for n in sorted(self.records)], list(self.invalid))

    def delete(self, name: str) -> bool:
        """Forget `name`'s record."""
        return self.records.pop(name, None) is not None

    def remembered_ports(self) -> dict[str, int]:
        """Name -> last port."""
        return dict(self.ports)


@dataclass
class MemorySecretStore:
    """Key files as paths mapped to keys."""

    keys: dict[Path, str] = field(default_factory=dict)
    discarded: list[Path] = field(default_factory=list)

    def write_api_key(self, name: str, *, for_container: bool = True) -> Path:
        """A new key for `name`; KeyFileExists when one is held."""
        path = self.api_key_path(name)
        if path in self.keys:
            raise KeyFileExists(name, str(path))
        self.keys[path] = f"key-{name}"
        return path

    def api_key_path(self, name: str) -> Path:
        """Where `name`'s key would be."""
        return Path("/memory/secrets") / name / "api_key"

    def read_api_key(self, path: Path) -> str:
        """The key at `path`."""
        return self.keys[path]

    def discard(self, path: Path) -> None:
        """Forget the key at `path`."""
        self.keys.pop(path, None)
        self.discarded.append(path)

    def remove_generated(self, name: str, api_key_path: str | None) -> str | None:
        """Discard `name`'s key when the path is the one write_api_key gave; else leave it."""
        if not api_key_path:
            return None
        if Path(api_key_path) != self.api_key_path(name):
            return f"API key file {api_key_path} is not one deploy generated; left alone"
        self.discard(Path(api_key_path))
        return "removed API key file"


@dataclass
class MemoryClock:
    """A clock that moves only when slept on."""

    now: float = 1000.0
    slept: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        """The current reading."""
        return self.now

    def sleep(self, seconds: float) -> None:
        """Move the clock on instead of waiting."""
        self.slept.append(seconds)
        self.now += seconds
