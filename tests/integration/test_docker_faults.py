"""Fault paths of the Docker adapter: each ends in a typed error and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from deployer.adapters.clock import SystemClock
from deployer.adapters.docker_engine import DockerEngine
from deployer.core.errors import (
    ContainerExited,
    EngineUnavailable,
    HealthTimeout,
    NameInUse,
    PortInUse,
)
from deployer.core.serve.containers import NAME_LABEL
from deployer.core.state.records import DeploymentRecord, iso_seconds, reconcile
from tests.integration.dockerkit import TEST_LABEL, demo_spec, docker_cli, truncated_copy
from tests.integration.loopback import free_port

pytestmark = pytest.mark.docker


def _names(engine: DockerEngine) -> list[str]:
    return [c.name for c in engine.list_deployer_containers()]


def test_daemon_not_reachable_is_exit_3_with_the_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(dead))  # a socket file nobody listens on
    monkeypatch.setenv("DOCKER_HOST", f"unix://{dead}")
    with pytest.raises(EngineUnavailable) as err:
        DockerEngine(timeout_s=3).engine_available()
    assert err.value.exit_code == 3
    assert str(dead) in err.value.message() and "dockerd" in err.value.message()


def test_port_already_taken(
    engine: DockerEngine, runtime_image: str, demo_model: Path, cleanup: list[str]
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(PortInUse) as err:
            engine.run_container(spec=demo_spec("dt-port", runtime_image, demo_model, port))
    assert f"127.0.0.1:{port}" in err.value.message() and "--port" in err.value.message()
    assert "dt-port" not in _names(engine)  # the created container was removed


def test_same_name_twice(
    engine: DockerEngine, runtime_image: str, demo_model: Path, cleanup: list[str]
) -> None:
    cleanup.append("dt-twice")
    first = engine.run_container(spec=demo_spec("dt-twice", runtime_image, demo_model, free_port()))
    with pytest.raises(NameInUse) as err:
        engine.run_container(spec=demo_spec("dt-twice", runtime_image, demo_model, free_port()))
    assert "deployer down dt-twice" in err.value.message()
    [only] = [c for c in engine.list_deployer_containers() if c.name == "dt-twice"]
    assert only.id == first  # the first one is untouched


def test_corrupt_model_exits_with_its_log_lines(
    engine: DockerEngine, runtime_image: str, demo_model: Path, tmp_path: Path, cleanup: list[str]
) -> None:
    bad = truncated_copy(demo_model, tmp_path / demo_model.name)
    cid = engine.run_container(spec=demo_spec("dt-corrupt", runtime_image, bad, free_port()))
    with pytest.raises(ContainerExited) as err:
        engine.wait_healthy(container_id=cid, timeout_s=60)
    assert err.value.exit_code == 1
    assert err.value.last_logs, "the last log lines come with the error"
    assert len(err.value.last_logs) <= 20
    text = err.value.message()
    assert "dt-corrupt" in text and "| " in text
    assert any("model" in line.lower() for line in err.value.last_logs)
    assert engine.stop_and_remove(name_or_id=cid) is True  # what deploy does on failure
    assert "dt-corrupt" not in _names(engine)


def test_health_timeout(
    engine: DockerEngine, runtime_image: str, demo_model: Path, cleanup: list[str]
) -> None:
    # The first check runs after one interval: 30 s, far beyond the 1 s allowed here.
    spec = demo_spec("dt-slow", runtime_image, demo_model, free_port(), interval_s=30.0)
    cid = engine.run_container(spec=spec)
    with pytest.raises(HealthTimeout) as err:
        engine.wait_healthy(container_id=cid, timeout_s=1.0)
    assert err.value.last_status == "starting"
    assert "not healthy after 1 s" in err.value.message()
    assert engine.stop_and_remove(name_or_id=cid) is True
    assert "dt-slow" not in _names(engine)


def test_sigint_while_waiting(
    engine: DockerEngine, runtime_image: str, demo_model: Path, cleanup: list[str]
) -> None:
    spec = demo_spec("dt-sigint", runtime_image, demo_model, free_port(), interval_s=30.0)
    cid = engine.run_container(spec=spec)
    # Ctrl-C as a terminal delivers it, whatever this process inherited: a test run started in
    # the background by a shell without job control has SIGINT ignored, and Python then keeps
    # it ignored (no KeyboardInterrupt would ever come; the wait would time out instead).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.7, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            engine.wait_healthy(container_id=cid, timeout_s=30.0)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert engine.stop_and_remove(name_or_id=cid) is True
    assert "dt-sigint" not in _names(engine)


def _record(name: str, port: int) -> DeploymentRecord:
    return DeploymentRecord(
        name=name,
        model="demo",
        quant="Q4_K_M",
        backend="llamacpp",
        runtime="container",
        endpoint=f"http://127.0.0.1:{port}",
        port=port,
        created_at=iso_seconds(SystemClock().utc_now()),
        container_id=None,
    )


def test_removed_by_hand_is_gone_and_unrecorded_is_orphan(
    engine: DockerEngine, runtime_image: str, demo_model: Path, cleanup: list[str]
) -> None:
    cleanup.append("dt-orphan")
    port = free_port()
    cid = engine.run_container(spec=demo_spec("dt-byhand", runtime_image, demo_model, port))
    # An orphan: labelled, never started, no record.
    engine.client().containers.create(
        runtime_image, name="dt-orphan", labels={NAME_LABEL: "dt-orphan", TEST_LABEL: "1"}
    )
    by_hand = _record("dt-byhand", port)
    before = {s.name: s.status for s in reconcile([by_hand], engine.list_deployer_containers())}
    assert before["dt-byhand"] in ("starting", "healthy", "running")
    assert before["dt-orphan"] == "orphan"

    cli = docker_cli()
    if cli:
        subprocess.run([cli, "rm", "-f", cid], check=True, capture_output=True)
    else:
        engine.client().containers.get(cid).remove(force=True)
    after = {s.name: s.status for s in reconcile([by_hand], engine.list_deployer_containers())}
    assert after["dt-byhand"] == "gone"
    assert after["dt-orphan"] == "orphan"
