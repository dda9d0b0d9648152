"""Deploy: plan -> pull -> render -> container -> healthy -> proven, or nothing left behind."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from deployer.core.containers import ContainerEngine
from deployer.core.errors import InvalidRequest
from deployer.core.plan import PlanResult
from deployer.core.render import API_KEY_IN_CONTAINER, RenderedBundle, startup_timeout_s
from deployer.core.resources import state_dir
from deployer.core.runtime_errors import NameInUse
from deployer.core.specs import ContainerSpec, Mount
from deployer.core.state import DeploymentRecord, load_record, now_iso, save_record

# The container user of the runtime image (render sets it; the key file must be readable by it).
CONTAINER_UID = 65534


class SmokeTester(Protocol):
    """Sends one real completion and reports what came back."""

    def __call__(self, endpoint: str, *, model: str, api_key: str | None) -> Any: ...


@dataclass
class DeployResult:
    """A running, proven deployment."""

    record: DeploymentRecord
    smoke: Any
    image_source: str
    seconds: float
    notes: list[str] = field(default_factory=list)

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
            "files": self.record.files,
            "smoke": {
                "text": s.text,
                "completion_tokens": s.completion_tokens,
                "time_to_first_token_ms": s.time_to_first_token_ms,
                "tokens_per_s": s.tokens_per_s,
                "seconds": round(s.seconds, 3),
            },
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }


def secrets_dir(name: str) -> Path:
    """Where a deployment's API key lives (under the state dir, 0700)."""
    return state_dir() / "secrets" / name


def write_api_key(name: str) -> Path:
    """Generate a key, store it with the tightest mode the container user can still read."""
    folder = secrets_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    path = folder / "api_key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(32))
    if os.geteuid() == 0:
        os.chown(path, CONTAINER_UID, CONTAINER_UID)
    else:
        # Without root we cannot hand the file to uid 65534; the 0700 folder keeps other host
        # users out while the bind-mounted file stays readable inside the container.
        os.chmod(path, 0o644)
    return path


def container_spec_for(bundle: RenderedBundle, api_key_file: Path | None) -> ContainerSpec:
    """The bundle's spec, with the key file mounted read-only where the server reads it."""
    spec = bundle.container_spec()
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
    on_progress: Callable[[float, str], None] | None = None,
    timeout_s: float | None = None,
) -> DeployResult:
    """Run the bundle's container until healthy and proven; on any failure remove it all."""
    started = time.monotonic()
    if load_record(bundle.name) is not None:
        raise NameInUse(bundle.name)
    if bundle.backend != "llamacpp":
        raise InvalidRequest(
            "container deploys of the ollama backend are not available yet",
            "Use 'deployer render --backend ollama' and run its files by hand.",
        )
    engine.engine_available()
    spec = container_spec_for(bundle, api_key_file)
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
            poll_s=0.1,
        )
        key = api_key_file.read_text().strip() if api_key_file else None
        proof = smoke(endpoint, model=bundle.labels["io.deployer.model"], api_key=key)
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
        save_record(record)
    except BaseException:
        # Nothing half-made survives: the container, its key and no record.
        if container_id is not None:
            engine.stop_and_remove(name_or_id=container_id, timeout_s=10.0)
        if api_key_file is not None:
            shutil.rmtree(api_key_file.parent, ignore_errors=True)
        raise
    return DeployResult(record, proof, image_source, time.monotonic() - started)
