"""Serve and prove: a Server started, healthy, proven with a completion and recorded, or nothing left."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from deployer.core.clock import Clock
from deployer.core.errors import NameInUse, SmokeTestFailed
from deployer.core.fit.plan import PlanResult
from deployer.core.serve.containers import ContainerEngine
from deployer.core.serve.keys import SecretStore
from deployer.core.serve.limits import resource_limits
from deployer.core.serve.proof import SmokeKind, SmokeResult, smoke_kind
from deployer.core.serve.render import RenderedBundle, startup_timeout_s
from deployer.core.serve.servers import Server
from deployer.core.serve.specs import ContainerSpec
from deployer.core.state.records import DeploymentRecord, iso_seconds
from deployer.core.state.store import RecordStore

# The container user of the runtime image (render sets it; the key file must be readable by it).
CONTAINER_UID = 65534


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
            "adapters": self.record.adapters,
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


def with_limits(
    spec: ContainerSpec,
    result: PlanResult,
    *,
    host_cpus: int | None,
    memory_limit_bytes: int | None = None,
) -> ContainerSpec:
    """`spec` capped by the plan (deployer.core.serve.limits), or by `memory_limit_bytes` when the
    user set one; its process cap sized for the host's CPUs (DeployHost.cpu_count), which the
    server in the container sees."""
    limits = resource_limits(result, host_cpus=host_cpus)
    memory = memory_limit_bytes or limits.memory_limit_bytes
    return replace(spec, memory_limit_bytes=memory, pids_limit=limits.pids)


def serve_and_prove(
    *,
    result: PlanResult,
    bundle: RenderedBundle,
    server: Server,
    smoke: SmokeTester,
    model_files: list[str],
    api_key_file: Path | None,
    records: RecordStore,
    keys: SecretStore | None,
    clock: Clock,
    on_progress: Callable[[float, str], None] | None = None,
    timeout_s: float | None = None,
) -> DeployResult:
    """Start `server` until healthy, prove it, record it; on any failure remove it all."""
    started = clock.monotonic()
    endpoint = f"http://127.0.0.1:{server.port}"
    try:
        server.start()
        wait = timeout_s or float(startup_timeout_s(result.chosen.facts.weights.file_bytes))
        server.wait_ready(endpoint, wait, on_progress)
        key = keys.read_api_key(api_key_file) if keys and api_key_file else None
        try:
            proof = smoke(
                endpoint, model=server.smoke_model, api_key=key, kind=smoke_kind_for(result)
            )
        except SmokeTestFailed as exc:
            # A proof that fails while the server thrashes at its limit is memory pressure.
            oom = server.memory_failure(exc)
            if oom is None:
                raise
            raise oom from exc
        record = DeploymentRecord(
            name=bundle.name,
            model=result.model,
            quant=result.chosen.facts.quant,
            backend=bundle.backend,
            runtime=server.runtime,
            endpoint=endpoint,
            port=server.port,
            created_at=iso_seconds(clock.utc_now()),
            api_key_path=str(api_key_file) if api_key_file else None,
            files=model_files,
            profile=result.profile.id,
            adapters=[
                {"ref": a.ref, "path": str(a.path), "scale": a.scale} for a in result.adapters
            ],
            **server.record_fields(),
        )
        records.save(record)
    except BaseException as exc:
        # Nothing half-made survives: the server, its key and no record (a native log stays).
        server.remove(late=not isinstance(exc, Exception), records=records, clock=clock)
        if keys is not None and api_key_file is not None:
            keys.discard(api_key_file)
        raise
    seconds = clock.monotonic() - started
    return DeployResult(
        record, proof, server.image_source, seconds, server.notes(), server.served_model
    )
