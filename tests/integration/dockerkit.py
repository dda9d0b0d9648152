"""Fixtures and helpers for the tests that need a real Docker engine (marker `docker`)."""

from __future__ import annotations

import json
import shutil
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployer.core.serve.containers import NAME_LABEL
from deployer.core.serve.specs import ContainerSpec, HealthCheck, Mount

pytest.importorskip("docker", reason="the Docker SDK is not installed (pip install '.[docker]')")

from deployer.adapters.docker_engine import DockerEngine
from deployer.core.errors import EngineUnavailable

TEST_LABEL = "io.deployer.test"


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def engine() -> DockerEngine:
    """A connected engine; the Docker tests skip only when none answers."""
    eng = DockerEngine()
    try:
        eng.engine_available()
    except EngineUnavailable as exc:
        pytest.skip(f"no Docker engine answers, Docker tests skipped: {exc.message()}")
    return eng


@pytest.fixture(scope="session")
def runtime_image(engine: DockerEngine) -> str:
    """The local llama-server image (built once, then reused)."""
    from deployer.adapters.image_build import build_runtime_image

    return build_runtime_image(engine=engine).tag


@pytest.fixture(scope="session")
def demo_model() -> Path:
    """The demo GGUF on the host."""
    from deployer.core.model.resolve import demo_model_path

    return demo_model_path()


@pytest.fixture
def cleanup(engine: DockerEngine) -> Iterator[list[str]]:
    """Names/ids to remove after the test, whatever happened; then assert none is left."""
    names: list[str] = []
    yield names
    for n in names:
        engine.stop_and_remove(name_or_id=n, timeout_s=2)
    client = engine.client()
    left = client.containers.list(all=True, filters={"label": TEST_LABEL}, ignore_removed=True)
    for c in left:
        c.remove(force=True)
    assert not left, f"containers left behind: {[c.name for c in left]}"


def demo_spec(
    name: str,
    image: str,
    model: Path,
    port: int,
    *,
    interval_s: float = 1.0,
    extra_labels: dict[str, str] | None = None,
) -> ContainerSpec:
    """A ContainerSpec serving `model` the way deploy does, with a fast health check."""
    return ContainerSpec(
        name=name,
        image=image,
        command=[
            *("-m", f"/models/{model.name}", "-c", "2048", "-np", "1"),
            *("--host", "0.0.0.0", "--port", "8080"),
        ],
        labels={NAME_LABEL: name, TEST_LABEL: "1", **(extra_labels or {})},
        mounts=[Mount(str(model), f"/models/{model.name}")],
        host_port=port,
        health=HealthCheck(
            test=["CMD", "wget", "-q", "-O-", "http://127.0.0.1:8080/health"],
            interval_s=interval_s,
            timeout_s=2.0,
            retries=3,
            start_period_s=30.0,
        ),
    )


def chat(port: int, prompt: str = "Say hello.") -> dict[str, Any]:
    """One real chat completion, at most 8 tokens."""
    body = json.dumps({"messages": [{"role": "user", "content": prompt}], "max_tokens": 8})
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        data: dict[str, Any] = json.loads(r.read())
    return data


def truncated_copy(src: Path, dest: Path, n_bytes: int = 4 << 20) -> Path:
    """The first `n_bytes` of a GGUF: a valid header, then nothing."""
    with src.open("rb") as f, dest.open("wb") as out:
        out.write(f.read(n_bytes))
    dest.chmod(0o644)
    return dest


def docker_cli() -> str | None:
    """The docker CLI, when present (for 'removed by hand')."""
    return shutil.which("docker")
