"""`deployer ps`, `logs`, `down` and `image build` through the typer app, on a real engine."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import docker.errors
import pytest
from typer.testing import CliRunner

from deployer.adapters.clock import SystemClock
from deployer.adapters.data_files import state_dir
from deployer.adapters.docker_engine import DockerEngine
from deployer.adapters.state_store import load_record, record_path, save_record
from deployer.cli.app import app
from deployer.core.serve.containers import NAME_LABEL
from deployer.core.state.records import DeploymentRecord, iso_seconds
from tests.integration.dockerkit import TEST_LABEL, demo_spec
from tests.integration.loopback import free_port

pytestmark = pytest.mark.docker
runner = CliRunner()


def _record(name: str, port: int, **kw: object) -> DeploymentRecord:
    base: dict[str, object] = {
        "name": name,
        "model": "demo",
        "quant": "Q4_K_M",
        "backend": "llamacpp",
        "runtime": "container",
        "endpoint": f"http://127.0.0.1:{port}",
        "port": port,
        "created_at": iso_seconds(SystemClock().utc_now()),
    }
    base.update(kw)
    return DeploymentRecord(**base)  # type: ignore[arg-type]


def _ps() -> dict[str, dict[str, object]]:
    result = runner.invoke(app, ["ps", "--json"])
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in json.loads(result.stdout)}


def test_ps_logs_down_of_a_live_deployment(
    engine: DockerEngine, runtime_image: str, demo_model: Path, cleanup: list[str]
) -> None:
    cleanup.append("dt-cli")
    port = free_port()
    cid = engine.run_container(spec=demo_spec("dt-cli", runtime_image, demo_model, port))
    key = state_dir() / "secrets" / "dt-cli" / "api_key"  # where deploy writes one
    key.parent.mkdir(parents=True)
    key.write_text("not-a-real-key")
    save_record(
        _record("dt-cli", port, container_id=cid, image=runtime_image, api_key_path=str(key))
    )
    engine.wait_healthy(container_id=cid, timeout_s=60)

    row = _ps()["dt-cli"]
    assert row["status"] == "healthy" and row["endpoint"] == f"http://127.0.0.1:{port}"
    assert isinstance(row["uptime_s"], float) and row["container_id"] == cid
    table = runner.invoke(app, ["ps"])
    assert "dt-cli" in table.stdout and "healthy" in table.stdout

    logs = runner.invoke(app, ["logs", "dt-cli", "--tail", "40"])
    assert logs.exit_code == 0 and "listening on" in logs.stdout
    assert len(logs.stdout.splitlines()) <= 40

    down = runner.invoke(app, ["down", "dt-cli"])
    assert down.exit_code == 0, down.output
    assert "stopped and removed container" in down.stdout and "state removed" in down.stdout
    assert not [c for c in engine.list_deployer_containers() if c.name == "dt-cli"]
    assert load_record("dt-cli") is None and not key.exists()

    again = runner.invoke(app, ["down", "dt-cli"])
    assert again.exit_code == 0 and "already gone" in again.stdout


def test_gone_record_and_orphan_then_down_all(engine: DockerEngine, runtime_image: str) -> None:
    save_record(_record("dt-gone", free_port(), container_id="f" * 64))
    engine.client().containers.create(
        runtime_image, name="dt-orph", labels={NAME_LABEL: "dt-orph", TEST_LABEL: "1"}
    )
    try:
        rows = _ps()
        assert rows["dt-gone"]["status"] == "gone"
        assert rows["dt-orph"]["status"] == "orphan" and rows["dt-orph"]["model"] is None

        logs = runner.invoke(app, ["logs", "dt-gone"])
        assert logs.exit_code == 1 and "deployer down dt-gone" in logs.output
        unknown = runner.invoke(app, ["logs", "dt-gon"])
        assert unknown.exit_code == 1 and "did you mean 'dt-gone'" in unknown.output

        down = runner.invoke(app, ["down", "--all"])
        assert down.exit_code == 0, down.output
        assert "dt-gone: container already gone" in down.stdout
        assert "dt-orph: stopped and removed container" in down.stdout
        assert not record_path("dt-gone").exists()
        assert "dt-orph" not in _ps() and "dt-gone" not in _ps()
    finally:
        engine.stop_and_remove(name_or_id="dt-orph", timeout_s=1)


def _hub_file(hub: Path, repo: str, name: str, data: bytes) -> Path:
    folder = hub / f"models--{repo.replace('/', '--')}"
    blob = folder / "blobs" / f"{abs(hash((repo, name))):064x}"[:64]
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    link = folder / "snapshots" / ("a" * 40) / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    return link


def test_down_purge_deletes_only_unshared_weights_in_the_hf_cache(
    engine: DockerEngine, tmp_path: Path
) -> None:
    hub = Path(os.environ["HF_HOME"]) / "hub"
    own = _hub_file(hub, "org/a", "a.gguf", b"A")
    shared = _hub_file(hub, "org/s", "s.gguf", b"S")
    outside = tmp_path / "mine.gguf"
    outside.write_bytes(b"M")
    save_record(_record("dt-pa", free_port(), files=[str(own), str(shared), str(outside)]))
    save_record(_record("dt-pb", free_port(), files=[str(shared)]))

    down = runner.invoke(app, ["down", "dt-pa", "--purge"])
    assert down.exit_code == 0, down.output
    assert not os.path.lexists(own) and not own.resolve().exists()
    assert shared.exists() and outside.exists()
    assert "used by another deployment" in down.stdout
    assert "not in the Hugging Face cache" in down.stdout
    assert load_record("dt-pa") is None and load_record("dt-pb") is not None


def test_dead_daemon_ps_warns_and_down_refuses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    save_record(_record("dt-nodaemon", free_port(), container_id="e" * 64))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    ps = runner.invoke(app, ["ps", "--json"])
    assert ps.exit_code == 0
    [row] = json.loads(ps.stdout)
    assert row["status"] == "unknown"
    assert "Docker unavailable" in ps.stderr
    down = runner.invoke(app, ["down", "dt-nodaemon"])
    assert down.exit_code == 3 and "dockerd" in down.stderr
    assert load_record("dt-nodaemon") is not None  # state kept: the container may still run


def test_image_build_json_reuses_the_image(engine: DockerEngine, runtime_image: str) -> None:
    result = runner.invoke(app, ["image", "build", "--backend", "llamacpp", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tag"] == runtime_image and data["built"] is False and data["size_bytes"] > 0


def test_down_of_a_hostile_record_touches_nothing_not_labelled_for_it(
    engine: DockerEngine, runtime_image: str
) -> None:
    """A record naming someone else's container, volume and network: down leaves all three
    (only what carries io.deployer.name=<name> is deployer's), and removes its own network."""
    client = engine.client()
    bystander = client.containers.create(
        runtime_image, name="dt-bystander", labels={TEST_LABEL: "1"}
    )
    volume = client.volumes.create(name="dt-bystander-vol")
    network = client.networks.create("dt-bystander-net")
    own_net = client.networks.create("dt-hostile-net", labels={NAME_LABEL: "dt-hostile"})
    try:
        save_record(
            _record(
                "dt-hostile",
                free_port(),
                container_id=bystander.id,
                volumes=[volume.name],
                networks=[network.name, own_net.name],
            )
        )
        down = runner.invoke(app, ["down", "dt-hostile"])
        assert down.exit_code == 0, down.output
        assert "dt-hostile: container already gone" in down.stdout
        assert f"volume {volume.name} is not labelled for 'dt-hostile'; left alone" in down.stdout
        assert "removed network dt-hostile-net" in down.stdout
        assert "dt-bystander-net" not in down.stdout
        client.containers.get(bystander.id)  # still there
        client.volumes.get(volume.name)
        client.networks.get(network.name)
        with pytest.raises(docker.errors.NotFound):
            client.networks.get(own_net.id)
        assert load_record("dt-hostile") is None
    finally:
        bystander.remove(force=True)
        volume.remove(force=True)
        network.remove()
        with contextlib.suppress(docker.errors.NotFound):
            own_net.remove()
