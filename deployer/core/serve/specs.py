"""What core hands to the container adapter: plain dataclasses, never SDK objects."""

from __future__ import annotations

from dataclasses import dataclass, field

from deployer.core.serve.conventions import NOBODY, TMP_DIR, TMP_SIZE_MIB, tmpfs_options


@dataclass(frozen=True)
class Mount:
    """A bind mount; read-only unless said otherwise."""

    source: str
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class HealthCheck:
    """A container health check (Docker HEALTHCHECK semantics)."""

    test: list[str]
    interval_s: float = 5.0
    timeout_s: float = 3.0
    retries: int = 3
    start_period_s: float = 0.0


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create one container, decided in Python by render/plan."""

    name: str
    image: str
    command: list[str]
    labels: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    host_ip: str = "127.0.0.1"
    host_port: int = 8080
    container_port: int = 8080
    user: str = NOBODY
    gpus: list[str] = field(default_factory=list)  # NVIDIA device ids; empty = no GPU
    read_only_rootfs: bool = True
    cap_drop: list[str] = field(default_factory=lambda: ["ALL"])
    security_opt: list[str] = field(default_factory=lambda: ["no-new-privileges"])
    restart_policy: str = "unless-stopped"
    health: HealthCheck | None = None
    tmpfs: dict[str, str] = field(default_factory=lambda: {TMP_DIR: tmpfs_options(TMP_SIZE_MIB)})
    # A tiny init as PID 1 forwards SIGTERM: llama-server as PID 1 ignores it while loading.
    init: bool = True
    # cgroup limits decided by render (resource_limits); None: no limit.
    memory_limit_bytes: int | None = None
    pids_limit: int | None = None


@dataclass(frozen=True)
class VolumeSpec:
    """A named volume a deployment owns; a one-shot init container hands it to `owner`.

    A fresh Docker volume belongs to root, so a server running as a non-root user could not
    write it; `init_command` runs as root with only CAP_CHOWN, no network and a read-only root
    filesystem, the volume mounted at `target`, and is removed when it exits.
    """

    name: str
    labels: dict[str, str]
    target: str
    init_image: str | None = None
    init_command: list[str] = field(default_factory=list)
