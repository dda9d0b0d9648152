"""`deployer deploy` end to end on a real engine: the demo model, a real completion, no leftovers."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deployer.adapters.data_files import state_dir
from deployer.adapters.docker_engine import DockerEngine
from deployer.adapters.state_store import load_record
from deployer.cli import wiring
from deployer.cli.app import app
from deployer.core.fit.plan import PlanResult
from deployer.core.hardware.profiles import get_profile
from deployer.core.serve.limits import resource_limits
from tests.integration.dockerkit import truncated_copy
from tests.integration.loopback import free_port

pytestmark = pytest.mark.docker

PROFILE = ["--profile", "cpu-x86-2c-8gb"]


def _deploy(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, ["deploy", *args, *PROFILE, "--json"])
    return r.exit_code, r.stdout, r.stderr


def _names(engine: DockerEngine) -> set[str]:
    return {c.name for c in engine.list_deployer_containers()}


def _demo_plan() -> PlanResult:
    """The plan `deploy demo` makes on PROFILE (the CLI's defaults)."""
    return wiring.plan_for("demo", get_profile(PROFILE[1]), quant=None, ctx=None, parallel=1,
                           kv_type="f16", backend="llamacpp")  # fmt: skip


def _time_waits(port: int) -> int:
    """Connections on local port `port` in TIME_WAIT (the kernel's own table)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "06":
                    count += 1
    return count


def _poll_health(port: int, times: int) -> None:
    for _ in range(times):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
            assert r.status == 200


def test_deploy_demo_proves_it_then_down_leaves_nothing(
    engine: DockerEngine, runtime_image: str
) -> None:
    port = free_port()
    code, out, err = _deploy("demo", "--name", "t-deploy", "--port", str(port))
    assert code == 0, err
    got = json.loads(out)
    assert got["endpoint"] == f"http://127.0.0.1:{port}"
    assert got["smoke"]["completion_tokens"] > 0 and got["smoke"]["tokens_per_s"] > 0
    # The demo has no chat template: proven by the count it must continue, and it does.
    assert got["smoke"]["kind"] == "completion" and got["smoke"]["matched"] is True, got["smoke"]
    assert got["image"] == runtime_image and "local" in got["image_source"]
    record = load_record("t-deploy")
    assert record is not None and record.container_id == got["container_id"]
    # Capped by the plan, and the demo loaded and answered under the cap (the smoke test above).
    host = engine.client().containers.get(got["container_id"]).attrs["HostConfig"]
    plan = _demo_plan()
    limits = resource_limits(plan, host_cpus=os.cpu_count())
    assert host["Memory"] == limits.memory_limit_bytes == host["MemorySwap"]
    assert host["PidsLimit"] == limits.pids
    ps = json.loads(CliRunner().invoke(app, ["ps", "--json"]).stdout)
    assert [d["name"] for d in ps] == ["t-deploy"]
    # A second deploy under the same name is refused and changes nothing.
    code2, _, err2 = _deploy("demo", "--name", "t-deploy", "--port", str(free_port()))
    assert code2 != 0 and "t-deploy" in err2
    assert _names(engine) >= {"t-deploy"}
    down = CliRunner().invoke(app, ["down", "t-deploy"])
    assert down.exit_code == 0
    assert "t-deploy" not in _names(engine)
    assert load_record("t-deploy") is None


def test_expose_uses_an_api_key_that_is_never_written_elsewhere(
    engine: DockerEngine, runtime_image: str
) -> None:
    port = free_port()
    code, out, err = _deploy("demo", "--name", "t-key", "--port", str(port), "--expose")
    try:
        assert code == 0, err
        got = json.loads(out)
        key_path = Path(got["api_key_path"])
        assert key_path.stat().st_mode & 0o777 == 0o600
        key = key_path.read_text().strip()
        assert len(key) >= 32
        url = f"http://127.0.0.1:{port}/v1/models"
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url, timeout=10)
        assert denied.value.code == 401
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(req, timeout=10) as ok:
            assert ok.status == 200
        # The key is in its file only: not in the output, the state, or the container's config.
        assert key not in out and key not in err
        for f in (state_dir() / "deployments").glob("*.json"):
            assert key not in f.read_text()
        attrs = engine.client().containers.get(got["container_id"]).attrs
        assert key not in json.dumps(attrs)
        logs = CliRunner().invoke(app, ["logs", "t-key", "--tail", "500"])
        assert key not in logs.stdout
    finally:
        CliRunner().invoke(app, ["down", "t-key"])
    assert not (state_dir() / "secrets" / "t-key").exists()


def test_corrupt_model_fails_clearly_and_removes_everything(
    engine: DockerEngine, runtime_image: str, tmp_path: Path
) -> None:
    from deployer.adapters.local_models import demo_model_path

    bad = truncated_copy(demo_model_path(), tmp_path / "broken.gguf")
    code, _, err = _deploy(str(bad), "--name", "t-bad", "--port", str(free_port()))
    assert code != 0
    assert "Traceback" not in err
    assert "t-bad" not in _names(engine)
    assert load_record("t-bad") is None


def test_port_taken_is_refused_before_anything_runs(
    engine: DockerEngine, runtime_image: str
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, _, err = _deploy("demo", "--name", "t-port", "--port", str(port))
    assert code != 0 and str(port) in err
    assert "t-port" not in _names(engine) and load_record("t-port") is None


def test_dry_run_prints_the_real_spec_and_runs_nothing(engine: DockerEngine) -> None:
    code, out, err = _deploy("demo", "--name", "t-dry", "--dry-run", "--port", "18123")
    assert code == 0, err
    got = json.loads(out)
    spec = got["container"]
    assert spec["ports"] == "127.0.0.1:18123->8080"
    assert spec["user"] == "65534:65534" and spec["cap_drop"] == ["ALL"]
    assert any(m["target"].startswith("/models/") and m["read_only"] for m in spec["mounts"])
    assert "/path/to" not in out and "<" not in " ".join(spec["command"])
    assert "t-dry" not in _names(engine)


def test_a_second_expose_under_a_running_name_changes_nothing(
    engine: DockerEngine, runtime_image: str
) -> None:
    port = free_port()
    code, out, err = _deploy("demo", "--name", "t-twice", "--port", str(port), "--expose")
    try:
        assert code == 0, err
        key_path = Path(json.loads(out)["api_key_path"])
        before = key_path.read_bytes(), key_path.stat().st_mtime_ns
        code2, out2, err2 = _deploy("demo", "--name", "t-twice", "--port", str(free_port()),
                                    "--expose")  # fmt: skip
        assert code2 == 1 and out2 == ""
        lines = err2.strip().splitlines()
        assert len(lines) == 1 and "'t-twice' exists already" in lines[0], err2
        assert (key_path.read_bytes(), key_path.stat().st_mtime_ns) == before
        key = before[0].decode().strip()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"}
        )
        with urllib.request.urlopen(req, timeout=10) as ok:
            assert ok.status == 200  # the first deployment still answers with its key
    finally:
        CliRunner().invoke(app, ["down", "t-twice"])


def test_redeploy_right_after_down_keeps_the_port(engine: DockerEngine, runtime_image: str) -> None:
    port = free_port()
    code, _, err = _deploy("demo", "--name", "t-again", "--port", str(port))
    try:
        assert code == 0, err
        _poll_health(port, 200)
        assert CliRunner().invoke(app, ["down", "t-again"]).exit_code == 0
        assert _time_waits(port) > 0  # what made the old check say "in use" for a minute
        code, out, err = _deploy("demo", "--name", "t-again", "--port", str(port))
        assert code == 0, err
        assert json.loads(out)["endpoint"] == f"http://127.0.0.1:{port}"
        _poll_health(port, 50)
        assert CliRunner().invoke(app, ["down", "t-again"]).exit_code == 0
        code, out, err = _deploy("demo", "--name", "t-again")  # no --port: the same one
        assert code == 0, err
        assert json.loads(out)["endpoint"] == f"http://127.0.0.1:{port}"
        assert f"port: {port} (the port 't-again' had before)" in err
    finally:
        CliRunner().invoke(app, ["down", "t-again"])
