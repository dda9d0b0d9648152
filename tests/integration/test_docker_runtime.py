"""The runtime image and the Docker adapter against a real engine, with the demo model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.dockerkit import chat, demo_spec
from tests.integration.loopback import free_port

pytestmark = pytest.mark.docker


def test_image_is_built_once_and_small(engine: object, runtime_image: str) -> None:
    from deployer.adapters.docker_engine import DockerEngine
    from deployer.adapters.image_build import build_runtime_image

    assert isinstance(engine, DockerEngine)
    again = build_runtime_image(engine=engine)
    assert again.tag == runtime_image == "deployer/llama-server:11434.0.0-cpu"
    assert again.built is False  # cached: present images are reused, --force rebuilds
    assert again.size_bytes < 64 << 20
    info = engine.image_info(tag=runtime_image)
    assert info is not None
    assert info.labels["io.deployer.llama-cpp-version"] == "11434.0.0"
    attrs = engine.client().images.get(runtime_image).attrs["Config"]
    assert attrs["User"] == "65534:65534"
    assert attrs["Entrypoint"] == ["/usr/local/bin/llama-server"]
    assert "wget" in attrs["Healthcheck"]["Test"]
    assert "8080/tcp" in attrs["ExposedPorts"]


def test_demo_model_serves_a_real_completion_locked_down(
    engine: object, runtime_image: str, demo_model: Path, cleanup: list[str]
) -> None:
    from deployer.adapters.docker_engine import DockerEngine

    assert isinstance(engine, DockerEngine)
    port = free_port()
    spec = demo_spec("dt-demo", runtime_image, demo_model, port)
    cleanup.append(spec.name)
    seen: list[str] = []
    cid = engine.run_container(spec=spec)
    engine.wait_healthy(
        container_id=cid, timeout_s=60, on_progress=lambda _s, status: seen.append(status)
    )

    answer = chat(port)
    assert answer["choices"][0]["message"]["role"] == "assistant"
    assert 1 <= answer["usage"]["completion_tokens"] <= 8

    attrs = engine.client().containers.get(cid).attrs
    host = attrs["HostConfig"]
    assert attrs["Config"]["User"] == "65534:65534"
    assert host["CapDrop"] == ["ALL"]
    assert host["ReadonlyRootfs"] is True
    assert host["Init"] is True  # SIGTERM reaches llama-server even while it loads
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["RestartPolicy"]["Name"] == "unless-stopped"
    assert host["PortBindings"]["8080/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    assert "/tmp" in host["Tmpfs"]
    [mount] = attrs["Mounts"]
    assert mount["Destination"] == f"/models/{demo_model.name}" and mount["RW"] is False
    assert attrs["State"]["Health"]["Status"] == "healthy"
    assert attrs["Config"]["Healthcheck"]["Interval"] == 1_000_000_000

    [info] = [c for c in engine.list_deployer_containers() if c.name == "dt-demo"]
    assert info.deployment == "dt-demo" and info.health == "healthy"
    assert info.ports["8080/tcp"] == f"127.0.0.1:{port}"
    logs = list(engine.container_logs(container_id=cid, tail=50, follow=False))
    assert any("listening on" in line for line in logs)

    assert engine.stop_and_remove(name_or_id=cid) is True
    assert not [c for c in engine.list_deployer_containers() if c.name == "dt-demo"]
    assert engine.stop_and_remove(name_or_id=cid) is False  # already gone: not an error
    with pytest.raises(ValueError, match="graceful"):
        engine.stop_and_remove(name_or_id=cid, timeout_s=0)
