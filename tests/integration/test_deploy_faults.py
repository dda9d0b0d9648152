"""`deployer deploy` faults: each ends in a clear message, a non-zero exit and nothing left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from deployer.adapters.docker_engine import DockerEngine
from deployer.core.state import load_record
from tests.integration.dockerkit import engine, free_port, runtime_image

pytestmark = pytest.mark.docker
__all__ = ["engine", "runtime_image"]  # fixtures, imported

CMD = [sys.executable, "-c", "from deployer.cli.app import main; main()", "deploy", "demo",
       "--profile", "cpu-x86-2c-8gb"]  # fmt: skip


def _names(engine: DockerEngine) -> set[str]:
    return {c.name for c in engine.list_deployer_containers()}


def _left_nothing(engine: DockerEngine, name: str) -> None:
    assert name not in _names(engine)
    assert load_record(name) is None


def test_health_timeout_is_reported_and_cleaned_up(
    engine: DockerEngine, runtime_image: str
) -> None:
    proc = subprocess.run(
        [*CMD, "--name", "t-timeout", "--port", str(free_port()), "--timeout", "0.3"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "healthy" in proc.stderr.lower() or "timeout" in proc.stderr.lower()
    _left_nothing(engine, "t-timeout")


def test_sigint_while_waiting_removes_the_container(
    engine: DockerEngine, runtime_image: str
) -> None:
    proc = subprocess.Popen(
        [*CMD, "--name", "t-sigint", "--port", str(free_port()), "--timeout", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    end = time.monotonic() + 60
    while "t-sigint" not in _names(engine) and time.monotonic() < end and proc.poll() is None:
        time.sleep(0.05)
    assert "t-sigint" in _names(engine), "the container never appeared"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    # Either the interrupt landed while waiting (130), or the deploy had already finished.
    if proc.returncode == 0:
        subprocess.run([*CMD[:3], "down", "t-sigint"], check=True, capture_output=True)
    else:
        assert proc.returncode == 130 and "interrupted" in err
    _left_nothing(engine, "t-sigint")


def test_daemon_not_running_is_exit_3_with_the_fix(tmp_path: object) -> None:
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    proc = subprocess.run(
        [*CMD, "--name", "t-nodaemon"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 3
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("error: Docker unavailable")
    assert "dockerd" in proc.stderr and "Traceback" not in proc.stderr
