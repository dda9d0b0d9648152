"""Several models behind one endpoint, on the real engine and image: the demo model and a
real-shaped Gemma 3 1B (benchmarks/shapes.py, weights a hole) served by llama-server's router.

Both answer by name through one port; with --max-loaded 1 asking the second unloads the first
(the router's GET /models says so, and so does `deployer ps`); `down` leaves nothing.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deployer.adapters.docker_engine import DockerEngine
from deployer.adapters.router_files import router_dir
from deployer.adapters.state_store import load_record
from deployer.cli.app import app
from tests.integration.loopback import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import shapes

pytestmark = pytest.mark.docker

PROFILE = ["--profile", "cpu-x86-2c-8gb"]
SECOND = "gemma3-1b-q4_k_m"


@pytest.fixture(scope="module")
def second_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sparse Gemma 3 1B, readable by the container's user."""
    path = shapes.build(SECOND, tmp_path_factory.mktemp("shapes"))
    path.chmod(0o644)
    return path


def _ask(port: int, key: str, path: str, body: dict[str, Any] | None = None) -> Any:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {key}"} if key else {}),
        },
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def _states(port: int, key: str) -> dict[str, str]:
    return {m["id"]: m["status"]["value"] for m in _ask(port, key, "/models")["data"]}


def _complete(port: int, key: str, model: str) -> dict[str, Any]:
    body = {"model": model, "prompt": "One, two, three,", "max_tokens": 4, "temperature": 0}
    answer: dict[str, Any] = _ask(port, key, "/v1/completions", body)
    return answer


def test_two_models_one_port_and_the_limit_holds(
    engine: DockerEngine, runtime_image: str, demo_model: Path, second_model: Path
) -> None:
    port = free_port()
    runner = CliRunner()
    args = ["deploy", "demo", str(second_model), "--name", "t-router", "--port", str(port),
            "--max-loaded", "1", "--ctx", "2048", "--expose", *PROFILE, "--json"]  # fmt: skip
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.stderr
    planned = json.loads(dry.stdout)
    largest = planned["plan"]["router"]["largest"]
    # One model loaded at a time: the larger one (plus the router) is what the container holds.
    assert largest["models"] == [SECOND] and largest["fits"] is True
    limit = planned["container"]["memory_limit_bytes"]
    assert limit > largest["host_bytes"]
    r = runner.invoke(app, args)
    try:
        assert r.exit_code == 0, r.stderr
        got = json.loads(r.stdout)
        assert got["smoke"]["completion_tokens"] > 0
        record = load_record("t-router")
        assert record is not None and record.api_key_path is not None
        key = Path(record.api_key_path).read_text().strip()
        container = engine.client().containers.get(got["container_id"])
        mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
        # Every model and the preset mounted read-only; the router's cap is the one asked for.
        for target in ("/models/demo.gguf", f"/models/{SECOND}.gguf", "/models/models.ini"):
            assert mounts[target]["RW"] is False
        assert container.attrs["Config"]["Cmd"][:4] == [
            "--models-preset", "/models/models.ini", "--models-max", "1",
        ]  # fmt: skip
        assert container.attrs["HostConfig"]["Memory"] == limit
        # Docker's own health check runs a probe the image that runs has.
        assert "wget" in container.attrs["Config"]["Healthcheck"]["Test"]
        # The proof asked the first model: it is the one loaded.
        assert _states(port, key) == {"demo": "loaded", SECOND: "unloaded"}
        first = _complete(port, key, "demo")
        assert first["model"] == "demo" and first["usage"]["completion_tokens"] > 0
        # Asking the second through the same port loads it and unloads the first.
        second = _complete(port, key, SECOND)
        assert second["model"] == SECOND and second["usage"]["completion_tokens"] > 0
        assert _states(port, key) == {"demo": "unloaded", SECOND: "loaded"}
        # ps reads the same from the server, with the deployment's key.
        ps = runner.invoke(app, ["ps", "--json"])
        assert ps.exit_code == 0, ps.stderr
        (row,) = [x for x in json.loads(ps.stdout) if x["name"] == "t-router"]
        assert row["models"] == [
            {"name": "demo", "status": "unloaded"}, {"name": SECOND, "status": "loaded"},
        ]  # fmt: skip
        # A name the router does not serve is refused, not routed elsewhere.
        with pytest.raises(urllib.error.HTTPError) as bad:
            _complete(port, key, "nope")
        assert bad.value.code in (400, 404)
        # Without the key, nothing.
        with pytest.raises(urllib.error.HTTPError) as denied:
            _ask(port, "wrong", "/models")
        assert denied.value.code == 401
    finally:
        down = runner.invoke(app, ["down", "t-router"])
    assert down.exit_code == 0, down.stderr
    assert "t-router" not in {c.name for c in engine.list_deployer_containers()}
    assert not router_dir("t-router").exists()


def test_a_server_not_answering_shows_unknown(
    engine: DockerEngine, runtime_image: str, demo_model: Path, second_model: Path
) -> None:
    port = free_port()
    runner = CliRunner()
    r = runner.invoke(app, [
        "deploy", "demo", str(second_model), "--name", "t-router-stop", "--port", str(port),
        "--ctx", "2048", *PROFILE, "--json",
    ])  # fmt: skip
    try:
        assert r.exit_code == 0, r.stderr
        # Paused: the port is published but nothing answers.
        container = engine.client().containers.get(json.loads(r.stdout)["container_id"])
        container.pause()
        ps = runner.invoke(app, ["ps", "--json"])
        container.unpause()
        assert ps.exit_code == 0, ps.stderr
        (row,) = [x for x in json.loads(ps.stdout) if x["name"] == "t-router-stop"]
        assert {m["status"] for m in row["models"]} == {"unknown"}
    finally:
        down = runner.invoke(app, ["down", "t-router-stop"])
    assert down.exit_code == 0, down.stderr


@pytest.mark.llama_server
def test_systemd_render_runs_as_written(
    tmp_path: Path, demo_model: Path, second_model: Path
) -> None:
    """The systemd unit's ExecStart and its host-path preset, run by the real llama-server
    (systemd itself is not here): both models answer by name, one loaded at a time."""
    import shlex
    import subprocess

    from tests.integration.evalkit import llama_server_binary, stop_process
    from tests.integration.loopback import wait_http_200

    binary = llama_server_binary()
    if binary is None:
        pytest.skip("no llama-server build: run 'bash scripts/build-llama.sh'")
    port, out = free_port(), tmp_path / "out"
    r = CliRunner().invoke(app, [
        "render", "demo", str(second_model), "--name", "t-unit", "--target", "systemd",
        "--port", str(port), "--max-loaded", "1", "--ctx", "2048", "--out", str(out), *PROFILE,
    ])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    unit = (out / "deployer-t-unit.service").read_text()
    (exec_start,) = [ln for ln in unit.splitlines() if ln.startswith("ExecStart=")]
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    preset = argv[argv.index("--models-preset") + 1]
    assert preset == "/etc/deployer/t-unit/models.ini"
    assert f"install -D -m 0644 models.ini {preset}" in (out / "README.md").read_text()
    # The preset names the models where they are on this host.
    ini = (out / "models.ini").read_text()
    assert f"model = {demo_model}" in ini and f"model = {second_model}" in ini
    argv[0], argv[argv.index(preset)] = binary, str(out / "models.ini")
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_http_200(f"http://127.0.0.1:{port}/health", timeout_s=60)
        for name, other in (("demo", SECOND), (SECOND, "demo")):
            assert _complete(port, "", name)["model"] == name
            states = _states(port, "")
            assert states[name] == "loaded" and states[other] == "unloaded"
    finally:
        stop_process(proc)
