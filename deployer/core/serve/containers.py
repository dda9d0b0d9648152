"""What the container adapter hands back, and the seam core uses to reach it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from deployer.core.serve.specs import ContainerSpec, VolumeSpec

NAME_LABEL = "io.deployer.name"


@dataclass(frozen=True)
class EngineInfo:
    """The container engine that answered."""

    version: str
    api_version: str
    os: str
    arch: str
    host: str  # where the client talks to (DOCKER_HOST or the default socket)


@dataclass(frozen=True)
class ContainerInfo:
    """One container as the engine sees it now."""

    id: str
    name: str
    image: str
    labels: dict[str, str]
    status: str  # created | running | restarting | exited | paused | dead | removing
    health: str | None  # starting | healthy | unhealthy; None without a health check
    started_at: str | None  # ISO 8601 from the engine; None when never started
    exit_code: int | None = None
    restart_count: int = 0
    ports: dict[str, str] = field(default_factory=dict)  # "8080/tcp" -> "127.0.0.1:18080"

    @property
    def deployment(self) -> str:
        """The deployment name from the io.deployer.name label."""
        return self.labels.get(NAME_LABEL, self.name)


@dataclass(frozen=True)
class ImageInfo:
    """A local image."""

    tag: str
    id: str
    size_bytes: int
    labels: dict[str, str]


@dataclass(frozen=True)
class MemoryUse:
    """A container's memory as its cgroup counts it (page cache included); None: not known."""

    oom_killed: bool = False  # the kernel's OOM killer ended the container's process
    limit_bytes: int | None = None
    usage_bytes: int | None = None  # now (running containers only)
    peak_bytes: int | None = None  # the most it used (cgroup v1 max_usage; v2 memory.peak)
    failcnt: int = 0  # times the cgroup hit its limit (cgroup v1)

    def at_limit(self, fraction: float = 0.95) -> bool:
        """Whether it was killed for memory, hit its limit, or sits within 5% of it."""
        if self.oom_killed or self.failcnt > 0:
            return True
        used = max(self.usage_bytes or 0, self.peak_bytes or 0)
        return self.limit_bytes is not None and used >= fraction * self.limit_bytes


ProgressFn = Callable[[float, str], None]  # (elapsed seconds, health status)


class ContainerEngine(Protocol):
    """What core needs from a container engine (deployer/adapters/docker_engine.py)."""

    def engine_available(self) -> EngineInfo:
        """Engine facts, or EngineUnavailable."""
        ...

    def run_container(self, *, spec: ContainerSpec) -> str:
        """Create and start a container; its id."""
        ...

    def wait_healthy(
        self,
        *,
        container_id: str,
        timeout_s: float,
        on_progress: ProgressFn | None = None,
        ready_url: str | None = None,
        poll_s: float = 0.5,
    ) -> None:
        """Return once healthy; ContainerExited or HealthTimeout otherwise."""
        ...

    def memory_use(self, *, container_id: str) -> MemoryUse:
        """What the container's cgroup holds and held (empty when the engine cannot say)."""
        ...

    def container_logs(self, *, container_id: str, tail: int, follow: bool) -> Iterator[str]:
        """Log lines, stdout and stderr merged."""
        ...

    def stop_and_remove(self, *, name_or_id: str, timeout_s: float = 10.0) -> bool:
        """Graceful stop then removal; False when there was nothing to remove."""
        ...

    def list_deployer_containers(self) -> list[ContainerInfo]:
        """Every container labelled io.deployer.name, running or not."""
        ...

    def remove_network(self, *, name: str) -> bool:
        """Remove a network labelled io.deployer.name; False when it did not exist or is not."""
        ...

    def create_volume(self, *, spec: VolumeSpec) -> bool:
        """Create a labelled volume and run its init command; False when it existed already."""
        ...

    def remove_volume(self, *, name: str) -> bool:
        """Remove a volume; False when it did not exist."""
        ...

    def list_deployer_volumes(self) -> dict[str, str]:
        """Volumes labelled io.deployer.name: volume name -> deployment name."""
        ...
