"""The three ways deploy runs a rendered bundle, behind one small interface (Server).

serve_and_prove (deployer.core.serve.deploy) starts a Server, waits for it, proves it with a
completion and records it; on any failure it calls remove(). Each server here only knows how
to start, wait for and remove its own kind: a llama.cpp container, an Ollama container (its
store volume and the model created in it), a native llama-server process.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, Protocol

from deployer.core.clock import Clock
from deployer.core.errors import ContainerExited, HealthTimeout, OutOfMemory
from deployer.core.serve.containers import ContainerEngine, ContainerInfo
from deployer.core.serve.render import API_KEY_IN_CONTAINER, RenderedBundle
from deployer.core.serve.specs import ContainerSpec, Mount
from deployer.core.state.store import RecordStore

# One random value per deploy attempt: cleanup after an interrupt that landed while the engine
# was still creating the container finds exactly what this attempt made, never a same-named
# container someone else owns.
ATTEMPT_LABEL = "io.deployer.attempt"

Progress = Callable[[float, str], None]


class Server(Protocol):
    """One deployment's server: started, waited for, described in its record, or removed."""

    runtime: Literal["container", "native"]  # the record's runtime
    port: int
    smoke_model: str  # the model name the proof sends
    served_model: str | None  # the name clients send, when not the record's model
    image_source: str

    def start(self) -> None:
        """Start the server (whatever start made, remove() takes away)."""
        ...

    def wait_ready(self, endpoint: str, timeout_s: float, on_progress: Progress | None) -> None:
        """Return once the server answers (and holds the model), or raise."""
        ...

    def record_fields(self) -> dict[str, Any]:
        """What the deployment record holds about this kind of server."""
        ...

    def remove(self, *, late: bool, records: RecordStore, clock: Clock) -> None:
        """Take away what start() made (`late`: interrupted, the engine may still be making it)."""
        ...

    def notes(self) -> list[str]:
        """Lines for the user after the proof."""
        ...


def container_spec_for(bundle: RenderedBundle, api_key_file: Path | None) -> ContainerSpec:
    """The bundle's spec, with the key file mounted read-only where the server reads it."""
    spec = bundle.container_spec()
    spec = replace(spec, labels={**spec.labels, ATTEMPT_LABEL: secrets.token_hex(8)})
    if api_key_file is not None:
        spec = replace(spec, mounts=[*spec.mounts, Mount(str(api_key_file), API_KEY_IN_CONTAINER)])
    return spec


def remove_attempt(
    engine: ContainerEngine,
    spec: ContainerSpec,
    container_id: str | None,
    name: str,
    *,
    late: bool,
    records: RecordStore,
    clock: Clock,
) -> None:
    """Remove this attempt's container (found by its label if creation was cut) and record."""
    if container_id is None:
        # Interrupted inside run_container: the engine may have made it all the same.
        container_id = _made_by_attempt(
            engine, spec.labels[ATTEMPT_LABEL], wait_s=1.0 if late else 0.0, clock=clock
        )
    if container_id is not None:
        engine.stop_and_remove(name_or_id=container_id, timeout_s=10.0)
    rec = records.load(name)
    if rec is not None and rec.container_id == container_id:
        records.delete(name)


def _made_by_attempt(
    engine: ContainerEngine, attempt: str, *, wait_s: float, clock: Clock
) -> str | None:
    """The id of the container labelled with this attempt, looking up to `wait_s` for it."""
    end = clock.monotonic() + wait_s
    while True:
        mine: list[ContainerInfo] = [
            c for c in engine.list_deployer_containers() if c.labels.get(ATTEMPT_LABEL) == attempt
        ]
        if mine:
            return mine[0].id
        if clock.monotonic() >= end:
            return None
        clock.sleep(0.1)


class LlamaContainer:
    """llama-server in a container: ready when /health answers."""

    runtime: Literal["container", "native"] = "container"
    served_model: str | None = None

    def __init__(
        self,
        engine: ContainerEngine,
        bundle: RenderedBundle,
        spec: ContainerSpec,
        image_source: str,
        *,
        ready_path: str = "/health",
        poll_s: float = 0.05,
        plan_bytes: int = 0,
    ) -> None:
        self.engine, self.bundle, self.spec = engine, bundle, spec
        self.image_source = image_source
        self.port = spec.host_port
        self.smoke_model = bundle.labels["io.deployer.model"]
        self.container_id: str | None = None
        self._ready_path, self._poll_s = ready_path, poll_s
        self.plan_bytes = plan_bytes  # the plan's host total, named when memory runs out

    def start(self) -> None:
        """Run the container."""
        self.container_id = self.engine.run_container(spec=self.spec)

    def wait_ready(self, endpoint: str, timeout_s: float, on_progress: Progress | None) -> None:
        """Until the engine's health check and the ready URL both pass; a death or stall under
        the memory limit is named as such (OutOfMemory), not as a plain exit or timeout."""
        assert self.container_id is not None
        try:
            self.engine.wait_healthy(
                container_id=self.container_id,
                timeout_s=timeout_s,
                on_progress=on_progress,
                ready_url=f"{endpoint}{self._ready_path}",
                poll_s=self._poll_s,
            )
        except (ContainerExited, HealthTimeout) as exc:
            raise self.memory_failure(exc) or exc from None

    def memory_failure(self, exc: Exception) -> OutOfMemory | None:
        """OutOfMemory when `exc` (an exit, a timeout) happened at the memory limit, else None."""
        if self.container_id is None or self.spec.memory_limit_bytes is None:
            return None
        use = self.engine.memory_use(container_id=self.container_id)
        # SIGKILL (137) under a memory limit, with nobody else stopping it, is the OOM killer.
        killed = use.oom_killed or (
            isinstance(exc, ContainerExited) and exc.container_exit_code == 137
        )
        if not killed and not (isinstance(exc, HealthTimeout) and use.at_limit()):
            return None
        limit = use.limit_bytes or self.spec.memory_limit_bytes
        peak = use.peak_bytes or use.usage_bytes
        if killed and (peak is None or peak < limit):
            # The kernel kills at the limit; a restart policy has since started the container
            # again in a fresh cgroup, whose counters say nothing of the killed attempt.
            peak = limit
        return OutOfMemory(self.spec.name, killed, self.plan_bytes, limit, peak)

    def record_fields(self) -> dict[str, Any]:
        """The container and its image."""
        return {"container_id": self.container_id, "image": self.spec.image}

    def remove(self, *, late: bool, records: RecordStore, clock: Clock) -> None:
        """The container (found by this attempt's label if creation was cut)."""
        remove_attempt(
            self.engine,
            self.spec,
            self.container_id,
            self.bundle.name,
            late=late,
            records=records,
            clock=clock,
        )

    def notes(self) -> list[str]:
        """None."""
        return []


class ModelCreator(Protocol):
    """Creates model `name` in the Ollama server at `endpoint` (deployer.adapters.ollama)."""

    def __call__(
        self,
        endpoint: str,
        *,
        name: str,
        model_path: Path,
        parameters: dict[str, Any],
        timeout_s: float,
        template: str | None = None,
    ) -> dict[str, Any]: ...


class OllamaContainer(LlamaContainer):
    """Ollama in a container with its store volume: ready once the model is created in it."""

    def __init__(
        self,
        engine: ContainerEngine,
        bundle: RenderedBundle,
        spec: ContainerSpec,
        image_source: str,
        *,
        create: ModelCreator,
        model_path: Path,
    ) -> None:
        super().__init__(engine, bundle, spec, image_source, ready_path="/api/version", poll_s=0.1)
        self.smoke_model = self.served_model = bundle.name
        self.create, self.model_path = create, model_path
        self.volumes = bundle.volume_specs()
        self.made: list[str] = []  # volumes this attempt created; a reused one is not ours
        self.created: dict[str, Any] = {}

    def start(self) -> None:
        """The store volume(s), then the container."""
        for vol in self.volumes:
            if self.engine.create_volume(spec=vol):
                self.made.append(vol.name)
        super().start()

    def wait_ready(self, endpoint: str, timeout_s: float, on_progress: Progress | None) -> None:
        """Until /api/version answers, then create the model from the weights."""
        super().wait_ready(endpoint, timeout_s, on_progress)
        self.created = self.create(
            endpoint,
            name=self.bundle.name,
            model_path=self.model_path,
            parameters=dict(self.bundle.model_parameters),
            timeout_s=timeout_s,
            template=self.bundle.model_template,
        )

    def record_fields(self) -> dict[str, Any]:
        """The container, its image and the store volumes."""
        return {**super().record_fields(), "volumes": [v.name for v in self.volumes]}

    def remove(self, *, late: bool, records: RecordStore, clock: Clock) -> None:
        """The container and the volumes this attempt created."""
        super().remove(late=late, records=records, clock=clock)
        for name in self.made:
            self.engine.remove_volume(name=name)

    def notes(self) -> list[str]:
        """The model created, the store, and the missing API key when exposed."""
        created = self.created
        how = "uploaded" if created.get("uploaded") else "already held"
        notes = [
            f"Ollama {created.get('version', '?')}: model '{self.bundle.name}' created from "
            f"{created.get('digest', '?')} ({how}), parameters {self.bundle.model_parameters}",
            f"store: volume {', '.join(v.name for v in self.volumes)} (removed by 'deployer down')",
        ]
        if self.spec.host_ip != "127.0.0.1":
            notes.append("Ollama has no API key: anyone who reaches this port can use the server")
        return notes


class NativeStarted(Protocol):
    """What a process runtime reports about a server it started."""

    @property
    def pid(self) -> int: ...

    @property
    def create_time(self) -> float: ...

    @property
    def log_path(self) -> str: ...


class ProcessRuntime(Protocol):
    """Starts, watches and stops a local server process (deployer.adapters.native)."""

    def start(self, *, name: str, argv: list[str], log_path: Path) -> NativeStarted: ...

    def wait_healthy(
        self,
        *,
        name: str,
        proc: Any,
        endpoint: str,
        timeout_s: float,
        on_progress: Progress | None = None,
    ) -> None: ...

    def stop(self, *, pid: int, create_time: float | None, timeout_s: float = 10.0) -> str: ...

    def forget(self, *, name: str) -> None: ...


class NativeProcess:
    """llama-server as a supervised local process; on failure it stops, the log stays."""

    runtime: Literal["container", "native"] = "native"
    served_model: str | None = None

    def __init__(self, runtime: ProcessRuntime, bundle: RenderedBundle, log_path: Path) -> None:
        self.supervisor, self.bundle, self.log_path = runtime, bundle, log_path
        self.argv = bundle.native_argv()
        self.port = bundle.host_port
        self.smoke_model = bundle.labels["io.deployer.model"]
        self.image_source = f"{self.argv[0]} (native)"
        self.proc: NativeStarted | None = None

    def start(self) -> None:
        """Start the process (its own group, output to the log)."""
        self.proc = self.supervisor.start(
            name=self.bundle.name, argv=self.argv, log_path=self.log_path
        )

    def wait_ready(self, endpoint: str, timeout_s: float, on_progress: Progress | None) -> None:
        """Until /health answers while the process lives."""
        self.supervisor.wait_healthy(
            name=self.bundle.name,
            proc=self.proc,
            endpoint=endpoint,
            timeout_s=timeout_s,
            on_progress=on_progress,
        )

    def record_fields(self) -> dict[str, Any]:
        """The pid, the binary that serves and the log."""
        assert self.proc is not None
        return {"pid": self.proc.pid, "image": self.argv[0], "log_path": str(self.log_path)}

    def remove(self, *, late: bool, records: RecordStore, clock: Clock) -> None:
        """The process group; the log stays for the user to read."""
        if self.proc is not None:
            self.supervisor.stop(
                pid=self.proc.pid, create_time=self.proc.create_time, timeout_s=10.0
            )
        self.supervisor.forget(name=self.bundle.name)

    def notes(self) -> list[str]:
        """Where the log is."""
        return [f"log: {self.log_path}"]
