"""Deploy: plan -> pull -> render -> container -> healthy -> proven, or nothing left behind."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from deployer.core.clock import Clock
from deployer.core.errors import InvalidRequest, NameInUse
from deployer.core.fit.plan import PlanResult
from deployer.core.serve.containers import ContainerEngine, ContainerInfo
from deployer.core.serve.keys import SecretStore
from deployer.core.serve.limits import resource_limits
from deployer.core.serve.proof import SmokeKind, SmokeResult, smoke_kind
from deployer.core.serve.render import API_KEY_IN_CONTAINER, RenderedBundle, startup_timeout_s
from deployer.core.serve.specs import ContainerSpec, Mount
from deployer.core.state.records import DeploymentRecord, now_iso
from deployer.core.state.store import RecordStore

# The container user of the runtime image (render sets it; the key file must be readable by it).
CONTAINER_UID = 65534
# One random value per deploy attempt: cleanup after an interrupt that landed while the engine
# was still creating the container finds exactly what this attempt made, never a same-named
# container someone else owns.
ATTEMPT_LABEL = "io.deployer.attempt"


class SmokeTester(Protocol):
    """Sends one real completion of the given kind and reports what came back."""

    def __call__(
        self, endpoint: str, *, model: str, api_key: str | None, kind: SmokeKind = "chat"
    ) -> SmokeResult: ...


def smoke_kind_for(result: PlanResult) -> SmokeKind:
    """The proof the planned model gets: chat with a chat template, else a checked completion."""
    return smoke_kind(result.chosen.facts.has_chat_template)


@dataclass
class DeployResult:
    """A running, proven deployment."""

    record: DeploymentRecord
    smoke: SmokeResult
    image_source: str
    seconds: float
    notes: list[str] = field(default_factory=list)
    served_model: str | None = None  # the name clients send; None: the record's model

    def as_dict(self) -> dict[str, Any]:
        """The `deployer deploy --json` form."""
        s = self.smoke
        return {
            "name": self.record.name,
            "model": self.record.model,
            "quant": self.record.quant,
            "backend": self.record.backend,
            "endpoint": self.record.endpoint,
            "api_key_path": self.record.api_key_path,
            "image": self.record.image,
            "image_source": self.image_source,
            "container_id": self.record.container_id,
            "runtime": self.record.runtime,
            "pid": self.record.pid,
            "log_path": self.record.log_path,
            "files": self.record.files,
            "served_model": self.served_model or self.record.model,
            "volumes": self.record.volumes,
            "smoke": {
                "text": s.text,
                "completion_tokens": s.completion_tokens,
                "time_to_first_token_ms": s.time_to_first_token_ms,
                "tokens_per_s": s.tokens_per_s,
                "seconds": round(s.seconds, 3),
                "kind": s.kind,
                "prompt": s.prompt,
                "expected": s.expected,
                "matched": s.matched,
            },
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }


def check_name_free(
    name: str, engine: ContainerEngine | None = None, *, records: RecordStore
) -> None:
    """Refuse a name that has a record, or (engine given) a labelled container: asked before
    anything (key, file, volume, container) is made, so a refusal changes nothing."""
    if records.load(name) is not None:
        raise NameInUse(name)
    if engine is not None and any(
        c.deployment == name or c.name == name for c in engine.list_deployer_containers()
    ):
        raise NameInUse(name)


def with_limits(spec: ContainerSpec, result: PlanResult) -> ContainerSpec:
    """`spec` capped by the plan (deployer.core.serve.limits), its process cap sized for this host's
    CPUs, which the server in the container sees."""
    limits = resource_limits(result, host_cpus=os.cpu_count())
    return replace(spec, memory_limit_bytes=limits.memory_limit_bytes, pids_limit=limits.pids)


def container_spec_for(bundle: RenderedBundle, api_key_file: Path | None) -> ContainerSpec:
    """The bundle's spec, with the key file mounted read-only where the server reads it."""
    spec = bundle.container_spec()
    spec = replace(spec, labels={**spec.labels, ATTEMPT_LABEL: secrets.token_hex(8)})
    if api_key_file is not None:
        spec = replace(spec, mounts=[*spec.mounts, Mount(str(api_key_file), API_KEY_IN_CONTAINER)])
    return spec


def deploy(
    *,
    result: PlanResult,
    bundle: RenderedBundle,
    engine: ContainerEngine,
    smoke: SmokeTester,
    model_files: list[str],
    api_key_file: Path | None,
    image_source: str,
    records: RecordStore,
    keys: SecretStore,
    clock: Clock,
    on_progress: Callable[[float, str], None] | None = None,
    timeout_s: float | None = None,
) -> DeployResult:
    """Run the bundle's container until healthy and proven; on any failure remove it all."""
    started = clock.monotonic()
    if records.load(bundle.name) is not None:
        raise NameInUse(bundle.name)
    if bundle.backend != "llamacpp":
        raise InvalidRequest(
            f"deploy() runs llama-server; the {bundle.backend} backend deploys through "
            "deployer.core.serve.ollama_deploy.deploy_ollama"
        )
    engine.engine_available()
    spec = with_limits(container_spec_for(bundle, api_key_file), result)
    endpoint = f"http://127.0.0.1:{spec.host_port}"
    container_id: str | None = None
    try:
        container_id = engine.run_container(spec=spec)
        wait = timeout_s or float(startup_timeout_s(result.chosen.facts.weights.file_bytes))
        engine.wait_healthy(
            container_id=container_id,
            timeout_s=wait,
            on_progress=on_progress,
            ready_url=f"{endpoint}/health",
            poll_s=0.05,
        )
        key = keys.read_api_key(api_key_file) if api_key_file else None
        proof = smoke(
            endpoint,
            model=bundle.labels["io.deployer.model"],
            api_key=key,
            kind=smoke_kind_for(result),
        )
        record = DeploymentRecord(
            name=bundle.name,
            model=result.model,
            quant=result.chosen.facts.quant,
            backend=bundle.backend,
            runtime="container",
            endpoint=endpoint,
            port=spec.host_port,
            created_at=now_iso(),
            container_id=container_id,
            image=spec.image,
            api_key_path=str(api_key_file) if api_key_file else None,
            files=model_files,
        )
        records.save(record)
    except BaseException as exc:
        # Nothing half-made survives: the container, its key and no record.
        late = not isinstance(exc, Exception)
        remove_attempt(
            engine, spec, container_id, bundle.name, late=late, records=records, clock=clock
        )
        if api_key_file is not None:
            keys.discard(api_key_file)
        raise
    return DeployResult(record, proof, image_source, clock.monotonic() - started)


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
        on_progress: Callable[[float, str], None] | None = None,
    ) -> None: ...

    def stop(self, *, pid: int, create_time: float | None, timeout_s: float = 10.0) -> str: ...

    def forget(self, *, name: str) -> None: ...


def deploy_native(
    *,
    result: PlanResult,
    bundle: RenderedBundle,
    runtime: ProcessRuntime,
    smoke: SmokeTester,
    model_files: list[str],
    api_key_file: Path | None,
    log_path: Path,
    records: RecordStore,
    keys: SecretStore,
    clock: Clock,
    on_progress: Callable[[float, str], None] | None = None,
    timeout_s: float | None = None,
) -> DeployResult:
    """Run the bundle's native argv until healthy and proven; on failure stop it, keep the log."""
    started = clock.monotonic()
    if records.load(bundle.name) is not None:
        raise NameInUse(bundle.name)
    argv = bundle.native_argv()
    endpoint = f"http://127.0.0.1:{bundle.host_port}"
    proc: NativeStarted | None = None
    try:
        proc = runtime.start(name=bundle.name, argv=argv, log_path=log_path)
        wait = timeout_s or float(startup_timeout_s(result.chosen.facts.weights.file_bytes))
        runtime.wait_healthy(
            name=bundle.name, proc=proc, endpoint=endpoint, timeout_s=wait, on_progress=on_progress
        )
        key = keys.read_api_key(api_key_file) if api_key_file else None
        proof = smoke(
            endpoint,
            model=bundle.labels["io.deployer.model"],
            api_key=key,
            kind=smoke_kind_for(result),
        )
        record = DeploymentRecord(
            name=bundle.name,
            model=result.model,
            quant=result.chosen.facts.quant,
            backend=bundle.backend,
            runtime="native",
            endpoint=endpoint,
            port=bundle.host_port,
            created_at=now_iso(),
            pid=proc.pid,
            image=argv[0],  # the binary that serves
            api_key_path=str(api_key_file) if api_key_file else None,
            files=model_files,
            log_path=str(log_path),
        )
        records.save(record)
    except BaseException:
        # The process group and the key go; the log stays for the user to read.
        if proc is not None:
            runtime.stop(pid=proc.pid, create_time=proc.create_time, timeout_s=10.0)
        runtime.forget(name=bundle.name)
        if api_key_file is not None:
            keys.discard(api_key_file)
        raise
    notes = [f"log: {log_path}"]
    return DeployResult(record, proof, f"{argv[0]} (native)", clock.monotonic() - started, notes)
