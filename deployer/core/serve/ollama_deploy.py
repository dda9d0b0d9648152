"""Deploy on Ollama: volume -> container -> /api/version -> create -> proven, or nothing left."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from deployer.core.clock import Clock
from deployer.core.errors import InvalidRequest, NameInUse
from deployer.core.fit.plan import PlanResult
from deployer.core.serve.containers import ContainerEngine
from deployer.core.serve.deploy import (
    DeployResult,
    SmokeTester,
    container_spec_for,
    remove_attempt,
    smoke_kind_for,
    with_limits,
)
from deployer.core.serve.render import RenderedBundle, startup_timeout_s
from deployer.core.state.records import DeploymentRecord, now_iso
from deployer.core.state.store import RecordStore


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


def deploy_ollama(
    *,
    result: PlanResult,
    bundle: RenderedBundle,
    engine: ContainerEngine,
    create: ModelCreator,
    smoke: SmokeTester,
    model_path: Path,
    model_files: list[str],
    image_source: str,
    records: RecordStore,
    clock: Clock,
    on_progress: Callable[[float, str], None] | None = None,
    timeout_s: float | None = None,
) -> DeployResult:
    """Run Ollama in a container, create the model in it, prove it; on failure remove it all."""
    started = clock.monotonic()
    if bundle.backend != "ollama":
        raise InvalidRequest(f"deploy_ollama got a {bundle.backend} bundle")
    if records.load(bundle.name) is not None:
        raise NameInUse(bundle.name)
    engine.engine_available()
    spec = with_limits(container_spec_for(bundle, None), result)
    endpoint = f"http://127.0.0.1:{spec.host_port}"
    volumes = bundle.volume_specs()
    made: list[str] = []  # volumes this attempt created; a reused one is not ours to remove
    container_id: str | None = None
    try:
        for vol in volumes:
            if engine.create_volume(spec=vol):
                made.append(vol.name)
        container_id = engine.run_container(spec=spec)
        wait = timeout_s or float(startup_timeout_s(result.chosen.facts.weights.file_bytes))
        engine.wait_healthy(
            container_id=container_id,
            timeout_s=wait,
            on_progress=on_progress,
            ready_url=f"{endpoint}/api/version",
            poll_s=0.1,
        )
        created = create(
            endpoint,
            name=bundle.name,
            model_path=model_path,
            parameters=dict(bundle.model_parameters),
            timeout_s=wait,
            template=bundle.model_template,
        )
        proof = smoke(endpoint, model=bundle.name, api_key=None, kind=smoke_kind_for(result))
        record = DeploymentRecord(
            name=bundle.name,
            model=result.model,
            quant=result.chosen.facts.quant,
            backend="ollama",
            runtime="container",
            endpoint=endpoint,
            port=spec.host_port,
            created_at=now_iso(),
            container_id=container_id,
            image=spec.image,
            files=model_files,
            volumes=[v.name for v in volumes],
        )
        records.save(record)
    except BaseException as exc:
        late = not isinstance(exc, Exception)
        remove_attempt(
            engine, spec, container_id, bundle.name, late=late, records=records, clock=clock
        )
        for name in made:
            engine.remove_volume(name=name)
        raise
    how = "uploaded" if created.get("uploaded") else "already held"
    notes = [
        f"Ollama {created.get('version', '?')}: model '{bundle.name}' created from "
        f"{created.get('digest', '?')} ({how}), parameters {bundle.model_parameters}",
        f"store: volume {', '.join(v.name for v in volumes)} (removed by 'deployer down')",
    ]
    if spec.host_ip != "127.0.0.1":
        notes.append("Ollama has no API key: anyone who reaches this port can use the server")
    return DeployResult(
        record, proof, image_source, clock.monotonic() - started, notes, served_model=bundle.name
    )
