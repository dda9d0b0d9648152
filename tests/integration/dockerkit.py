"""Helpers for the tests that need a real Docker engine (marker `docker`); their fixtures
(`engine`, `runtime_image`, `demo_model`, `cleanup`) are in conftest.py."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

from deployer.core.serve.containers import NAME_LABEL
from deployer.core.serve.specs import ContainerSpec, HealthCheck, Mount

TEST_LABEL = "io.deployer.test"


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
