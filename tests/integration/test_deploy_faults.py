"""`deployer deploy` faults: each ends in a clear message, a non-zero exit and nothing left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from deployer.adapters.docker_engine import DockerEngine
from deployer.adapters.state_store import load_record
from deployer.core.serve.specs import ContainerSpec
from tests.integration.loopback import free_port

pytestmark = pytest.mark.docker

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


@pytest.mark.parametrize("delay_s", [0.0, 0.5])
def test_sigint_while_waiting_removes_the_container(
    engine: DockerEngine, runtime_image: str, delay_s: float
) -> None:
    """SIGINT as soon as the container exists (the engine may still be answering the create
    call), and a moment later while the server loads: either way nothing is left."""
    name = f"t-sigint-{int(delay_s * 10)}"
    proc = subprocess.Popen(
        [*CMD, "--name", name, "--port", str(free_port()), "--timeout", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        end = time.monotonic() + 60
        while name not in _names(engine) and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.01)
        assert name in _names(engine), "the container never appeared"
        time.sleep(delay_s)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        # Either the interrupt landed while deploying (130), or the deploy had already finished.
        if proc.returncode == 0:
            subprocess.run([*CMD[:3], "down", name], check=True, capture_output=True)
        else:
            assert proc.returncode == 130 and "interrupted" in err
            assert "Traceback" not in err
        _left_nothing(engine, name)
    finally:
        # Whatever failed above, the next test must not inherit this deploy.
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
        subprocess.run([*CMD[:3], "down", name], capture_output=True)


def test_daemon_not_running_is_exit_3_with_the_fix(tmp_path: object) -> None:
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    proc = subprocess.run(
        [*CMD, "--name", "t-nodaemon"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 3
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("error: Docker unavailable")
    assert "dockerd" in proc.stderr and "Traceback" not in proc.stderr


class _InterruptedAfterCreate(DockerEngine):
    """The real engine, with Ctrl-C injected after the container is created but before
    run_container returns its id: the window where only the attempt label finds it."""

    def run_container(self, *, spec: ContainerSpec) -> str:
        self.client().containers.create(**self._create_kwargs(spec))
        raise KeyboardInterrupt


def test_interrupt_inside_container_creation_still_leaves_nothing(
    engine: DockerEngine, runtime_image: str
) -> None:
    from deployer.adapters.host import LocalHost
    from deployer.adapters.local_models import demo_model_path
    from deployer.adapters.smoke import llama_server_smoke
    from deployer.cli import wiring
    from deployer.core.hardware.profiles import get_profile
    from deployer.core.serve.deploy import serve_and_prove, with_limits
    from deployer.core.serve.render import render_plan
    from deployer.core.serve.servers import ATTEMPT_LABEL, LlamaContainer, container_spec_for

    result = wiring.plan_for("demo", get_profile("cpu-x86-2c-8gb"), quant=None, ctx=None,
                             parallel=1, kv_type="f16", backend="llamacpp")  # fmt: skip
    bundle = render_plan(result, backend="llamacpp", target="compose", model_path=demo_model_path(),
                         port=free_port(), expose=False, insecure=False, name="t-midcreate",
                         image=runtime_image)  # fmt: skip
    # Someone else's container with a deployer label must survive our cleanup.
    other = engine.client().containers.create(
        runtime_image, name="t-midcreate-other", labels={"io.deployer.name": "t-other"}
    )
    host = LocalHost()
    spec = container_spec_for(bundle, None, attempt=host.attempt_id())
    server = LlamaContainer(_InterruptedAfterCreate(), bundle,
                            with_limits(spec, result, host_cpus=host.cpu_count()), "local")  # fmt: skip
    try:
        with pytest.raises(KeyboardInterrupt):
            serve_and_prove(result=result, bundle=bundle, server=server,
                            smoke=llama_server_smoke, model_files=[], api_key_file=None,
                            records=wiring.record_store(), keys=wiring.secret_store(),
                            clock=wiring.clock())  # fmt: skip
        _left_nothing(engine, "t-midcreate")
        assert not [c for c in engine.list_deployer_containers() if ATTEMPT_LABEL in c.labels]
        assert "t-midcreate-other" in _names(engine)
    finally:
        other.remove(force=True)
