"""The Docker engine through the Docker SDK: the only module that imports `docker`.

Everything in and out is our own dataclasses; SDK errors become deployer errors here.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer.adapters.ports import port_free
from deployer.core.errors import (
    ContainerExited,
    EngineUnavailable,
    HealthTimeout,
    ImageBuildFailed,
    ImageMissing,
    NameInUse,
    PortInUse,
    VolumeInitFailed,
    VolumeInUse,
)
from deployer.core.serve.containers import (
    NAME_LABEL,
    ContainerInfo,
    EngineInfo,
    ImageInfo,
    MemoryUse,
    ProgressFn,
)
from deployer.core.serve.specs import ContainerSpec, VolumeSpec

if TYPE_CHECKING:
    import docker

NS = 1_000_000_000
LAST_LOG_LINES = 20
_PORT_TAKEN = ("port is already allocated", "address already in use")


def _ns(seconds: float) -> int:
    return int(seconds * NS)


def _positive(value: Any) -> int | None:
    """An engine number as a positive int, else None (absent, zero, not a number)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _info(container: Any) -> ContainerInfo:
    attrs: dict[str, Any] = container.attrs
    state = attrs.get("State", {})
    health = (state.get("Health") or {}).get("Status")
    started = state.get("StartedAt") or None
    if started and started.startswith("0001-01-01"):
        started = None
    ports: dict[str, str] = {}
    for port, binds in (attrs.get("NetworkSettings", {}).get("Ports") or {}).items():
        if binds:
            ports[port] = f"{binds[0].get('HostIp', '')}:{binds[0].get('HostPort', '')}"
    return ContainerInfo(
        id=container.id,
        name=attrs.get("Name", "").lstrip("/") or container.name,
        image=attrs.get("Config", {}).get("Image", ""),
        labels=dict(attrs.get("Config", {}).get("Labels") or {}),
        status=state.get("Status", "unknown"),
        health=health,
        started_at=started,
        exit_code=state.get("ExitCode"),
        restart_count=int(attrs.get("RestartCount", 0)),
        ports=ports,
    )


class DockerEngine:
    """deployer's ContainerEngine on the Docker SDK (API 1.41+)."""

    def __init__(self, *, timeout_s: float = 30.0) -> None:
        self._timeout_s = timeout_s
        self._client: docker.DockerClient | None = None
        self._engine_info: EngineInfo | None = None

    # -- connection --------------------------------------------------------------------------

    def _host(self) -> str:
        return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")

    def client(self) -> docker.DockerClient:
        """A connected client, or EngineUnavailable."""
        if self._client is None:
            import docker
            import docker.errors

            try:
                client = docker.from_env(timeout=int(self._timeout_s))
                client.ping()
            except (docker.errors.DockerException, OSError) as exc:
                raise EngineUnavailable(f"no engine answers at {self._host()} ({exc})") from None
            self._client = client
        return self._client

    def engine_available(self) -> EngineInfo:
        """Engine version facts, or EngineUnavailable with the hint to start dockerd."""
        import docker.errors

        if self._engine_info is not None:
            return self._engine_info  # asked once per engine: every deploy step checks it
        try:
            v = self.client().version()
        except docker.errors.DockerException as exc:
            raise EngineUnavailable(str(exc)) from None
        self._engine_info = EngineInfo(
            version=str(v.get("Version", "")),
            api_version=str(v.get("ApiVersion", "")),
            os=str(v.get("Os", "")),
            arch=str(v.get("Arch", "")),
            host=self._host(),
        )
        return self._engine_info

    # -- containers --------------------------------------------------------------------------

    def _create_kwargs(self, spec: ContainerSpec) -> dict[str, Any]:
        from docker.types import DeviceRequest, Mount

        mounts = [
            Mount(
                target=m.target,
                source=m.source,
                # An absolute source is a host path; anything else names a Docker volume.
                type="bind" if m.source.startswith("/") else "volume",
                read_only=m.read_only,
            )
            for m in spec.mounts
        ]
        kwargs: dict[str, Any] = {
            "image": spec.image,
            "command": list(spec.command),
            "name": spec.name,
            "labels": dict(spec.labels),
            "environment": dict(spec.env),
            "mounts": mounts,
            "ports": {f"{spec.container_port}/tcp": (spec.host_ip, spec.host_port)},
            "user": spec.user,
            "read_only": spec.read_only_rootfs,
            "tmpfs": dict(spec.tmpfs),
            "cap_drop": list(spec.cap_drop),
            "security_opt": list(spec.security_opt),
            "restart_policy": {"Name": spec.restart_policy},
            "init": spec.init,
            "detach": True,
        }
        if spec.gpus:
            request = (
                DeviceRequest(driver="nvidia", count=-1, capabilities=[["gpu"]])
                if spec.gpus == ["all"]
                else DeviceRequest(driver="nvidia", device_ids=spec.gpus, capabilities=[["gpu"]])
            )
            kwargs["device_requests"] = [request]
        if spec.memory_limit_bytes is not None:
            kwargs["mem_limit"] = spec.memory_limit_bytes
            kwargs["memswap_limit"] = spec.memory_limit_bytes  # no swap on top: the cap is the cap
        if spec.pids_limit is not None:
            kwargs["pids_limit"] = spec.pids_limit
        if spec.health is not None:
            h = spec.health
            kwargs["healthcheck"] = {
                "test": list(h.test),
                "interval": _ns(h.interval_s),
                "timeout": _ns(h.timeout_s),
                "retries": h.retries,
                "start_period": _ns(h.start_period_s),
            }
        return kwargs

    def run_container(self, *, spec: ContainerSpec) -> str:
        """Create and start a container from `spec`; its id. Nothing is left behind on failure."""
        import docker.errors

        client = self.client()
        try:
            container = client.containers.create(**self._create_kwargs(spec))
        except docker.errors.ImageNotFound:
            raise ImageMissing(spec.image) from None
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise NameInUse(spec.name) from None
            raise
        try:
            # Checked here as well as at start: a host process on the port gives a clearer
            # answer before docker-proxy tries, and the created container is removed below.
            if not port_free(spec.host_ip, spec.host_port):
                raise PortInUse(spec.host_ip, spec.host_port)
            container.start()
        except PortInUse:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True, v=True)
            raise
        except docker.errors.APIError as exc:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True, v=True)
            text = str(exc.explanation or exc)
            if any(s in text for s in _PORT_TAKEN):
                raise PortInUse(spec.host_ip, spec.host_port) from None
            raise
        return str(container.id)

    def _get_exact(self, name_or_id: str) -> Any | None:
        """The container with exactly this name or id (Docker also matches id prefixes)."""
        import docker.errors

        try:
            c = self.client().containers.get(name_or_id)
        except docker.errors.NotFound:
            return None
        exact = c.name == name_or_id or c.id == name_or_id
        if exact or (len(name_or_id) >= 12 and c.id.startswith(name_or_id)):
            return c
        return None

    def memory_use(self, *, container_id: str) -> MemoryUse:
        """OOMKilled and the limit from inspect; usage, peak and failcnt from a running
        container's stats (cgroup v1 reports its peak as max_usage; v2 through Docker does not)."""
        import docker.errors

        try:
            container = self._get_exact(container_id)
            if container is None:
                return MemoryUse()
            container.reload()
            state = container.attrs.get("State") or {}
            limit = (container.attrs.get("HostConfig") or {}).get("Memory") or None
            stats: dict[str, Any] = {}
            if state.get("Status") == "running":
                stats = container.stats(stream=False).get("memory_stats") or {}
        except docker.errors.APIError:
            return MemoryUse()
        return MemoryUse(
            oom_killed=bool(state.get("OOMKilled")),
            limit_bytes=_positive(limit),
            usage_bytes=_positive(stats.get("usage")),
            peak_bytes=_positive(stats.get("max_usage")),
            failcnt=_positive(stats.get("failcnt")) or 0,
        )

    def _last_lines(self, container: Any, n: int = LAST_LOG_LINES) -> list[str]:
        import docker.errors

        try:
            raw: bytes = container.logs(tail=n)
        except docker.errors.APIError:
            return []
        return raw.decode("utf-8", "replace").splitlines()[-n:]

    def wait_healthy(
        self,
        *,
        container_id: str,
        timeout_s: float,
        on_progress: ProgressFn | None = None,
        ready_url: str | None = None,
        poll_s: float = 0.5,
    ) -> None:
        """Poll Docker's health status (and `ready_url`, when given) until healthy.

        A container that stops or restarts raises ContainerExited; one still not healthy after
        `timeout_s` raises HealthTimeout. Both carry the last log lines. Ctrl-C propagates.
        """
        import docker.errors

        client = self.client()
        start = time.monotonic()
        status = "starting"
        while True:
            try:
                container = client.containers.get(container_id)
            except docker.errors.NotFound:
                raise ContainerExited(container_id, None, ["(the container was removed)"]) from None
            info = _info(container)
            if info.status in ("exited", "dead", "restarting") or info.restart_count > 0:
                # A restart policy hides a crash as 'restarting': that is an exit all the same.
                raise ContainerExited(info.name, info.exit_code, self._last_lines(container))
            status = info.health or info.status
            if info.health == "healthy" or (info.health is None and info.status == "running"):
                return
            if ready_url and info.status == "running" and _answers_200(ready_url):
                return
            elapsed = time.monotonic() - start
            if on_progress is not None:
                on_progress(elapsed, status)
            if elapsed >= timeout_s:
                raise HealthTimeout(info.name, timeout_s, status, self._last_lines(container))
            time.sleep(min(poll_s, max(0.05, timeout_s - elapsed)))

    def container_logs(self, *, container_id: str, tail: int, follow: bool) -> Iterator[str]:
        """Log lines (stdout and stderr merged); with `follow`, until the container stops."""

        container = self._get_exact(container_id)
        if container is None:
            return
        if not follow:
            raw: bytes = container.logs(tail=tail)
            yield from raw.decode("utf-8", "replace").splitlines()
            return
        pending = ""
        for chunk in container.logs(stream=True, follow=True, tail=tail):
            pending += chunk.decode("utf-8", "replace")
            *lines, pending = pending.split("\n")
            yield from lines
        if pending:
            yield pending

    def stop_and_remove(self, *, name_or_id: str, timeout_s: float = 10.0) -> bool:
        """SIGTERM, up to `timeout_s` to exit, then remove with its anonymous volumes.

        False when no such container exists. A zero timeout is refused: it skips the graceful
        stop that lets llama-server finish in-flight requests.
        """
        import docker.errors

        if timeout_s <= 0:
            raise ValueError("stop timeout must be positive: a graceful stop is the point")
        container = self._get_exact(name_or_id)
        if container is None:
            return False
        try:
            if container.status in ("running", "restarting", "paused"):
                container.stop(timeout=max(1, round(timeout_s)))
            container.remove(v=True, force=True)
        except docker.errors.NotFound:
            return False
        return True

    def list_deployer_containers(self) -> list[ContainerInfo]:
        """Every container labelled io.deployer.name, running or not.

        The SDK lists ids, then inspects each: a container that is removed in between (another
        deploy's cleanup, `docker rm`) or is still being created answers 404 and is skipped
        rather than failing the whole listing.
        """
        containers = self.client().containers.list(
            all=True, filters={"label": NAME_LABEL}, ignore_removed=True
        )
        return [_info(c) for c in containers]

    def remove_network(self, *, name: str) -> bool:
        """Remove a network labelled io.deployer.name; False when none is, or it did not exist.

        The name comes from a state file: a network deployer did not label is someone else's.
        """
        import docker.errors

        try:
            network = self.client().networks.get(name)
            if NAME_LABEL not in (network.attrs.get("Labels") or {}):
                return False
            network.remove()
        except docker.errors.NotFound:
            return False
        return True

    def create_volume(self, *, spec: VolumeSpec) -> bool:
        """Create a labelled volume and run its init command; False when it existed already.

        The init container runs as root with CAP_CHOWN only, no network, a read-only root
        filesystem and no-new-privileges, and is removed when it exits. An existing volume
        (a previous deployment's store) is reused as it is.
        """
        import docker.errors
        from docker.types import Mount

        client = self.client()
        try:
            client.volumes.get(spec.name)
            return False
        except docker.errors.NotFound:
            pass
        client.volumes.create(name=spec.name, labels=dict(spec.labels))
        if spec.init_image is None or not spec.init_command:
            return True
        try:
            client.containers.run(
                spec.init_image,
                # An entrypoint given here clears the image's CMD: only this command runs.
                entrypoint=list(spec.init_command),
                user="0:0",
                cap_drop=["ALL"],
                cap_add=["CHOWN"],
                security_opt=["no-new-privileges"],
                network_mode="none",
                read_only=True,
                mounts=[Mount(target=spec.target, source=spec.name, type="volume")],
                remove=True,
                detach=False,
            )
        except docker.errors.ImageNotFound:
            self.remove_volume(name=spec.name)
            raise ImageMissing(
                spec.init_image, spec.labels.get("io.deployer.backend", "")
            ) from None
        except (docker.errors.ContainerError, docker.errors.APIError) as exc:
            self.remove_volume(name=spec.name)
            detail = getattr(exc, "stderr", None) or getattr(exc, "explanation", None) or exc
            if isinstance(detail, bytes):
                detail = detail.decode("utf-8", "replace")
            raise VolumeInitFailed(spec.name, spec.init_image, str(detail).strip()) from None
        return True

    def remove_volume(self, *, name: str) -> bool:
        """Remove a volume; False when it did not exist. One still mounted is VolumeInUse."""
        import docker.errors

        try:
            self.client().volumes.get(name).remove()
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as exc:
            raise VolumeInUse(name, str(exc.explanation or exc)) from None
        return True

    def list_deployer_volumes(self) -> dict[str, str]:
        """Volumes labelled io.deployer.name (an Ollama store): volume name -> deployment name.

        Found by label, so `down` removes a store even when the deployment's record is lost.
        """
        volumes = self.client().volumes.list(filters={"label": NAME_LABEL})
        return {v.name: (v.attrs.get("Labels") or {}).get(NAME_LABEL, "") for v in volumes}

    # -- images ------------------------------------------------------------------------------

    def image_info(self, *, tag: str) -> ImageInfo | None:
        """The local image `tag`, or None."""
        import docker.errors

        try:
            image = self.client().images.get(tag)
        except docker.errors.ImageNotFound:
            return None
        return ImageInfo(
            tag=tag,
            id=str(image.id),
            size_bytes=int(image.attrs.get("Size", 0)),
            labels=dict(image.labels or {}),
        )

    def try_pull(self, *, tag: str) -> bool:
        """Pull `tag` from its registry; False when no registry answers (air-gapped sites)."""
        import docker.errors

        try:
            self.client().images.pull(tag)
        except (docker.errors.APIError, docker.errors.DockerException):
            return False
        return True

    def build_image(self, *, context_dir: Path, tag: str) -> ImageInfo:
        """`docker build` of `context_dir` (its Dockerfile), no registry access."""
        import docker.errors

        try:
            self.client().images.build(
                path=str(context_dir), tag=tag, rm=True, forcerm=True, pull=False
            )
        except docker.errors.BuildError as exc:
            tail = [str(e.get("stream", e.get("error", ""))).rstrip() for e in exc.build_log]
            raise ImageBuildFailed(tag, exc.msg, [t for t in tail if t][-LAST_LOG_LINES:]) from None
        except docker.errors.APIError as exc:
            raise ImageBuildFailed(tag, str(exc.explanation or exc)) from None
        info = self.image_info(tag=tag)
        if info is None:
            raise ImageBuildFailed(tag, "the build finished but the image is not there")
        return info


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return int(r.status) == 200
    except (OSError, urllib.error.URLError):
        return False
