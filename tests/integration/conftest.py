"""Fixtures of the integration tests: a real Docker engine and its runtime image, real sshd
hosts, the loopback Hub. Helpers that are plain functions stay in their kits (dockerkit,
sshkit, netnskit, hubserver, loopback, ollama_contract); fixtures live here only, so a test
module never imports one."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.integration.benchkit import BenchDeployment, deployed_for_bench
from tests.integration.dockerkit import TEST_LABEL
from tests.integration.hubserver import LoopbackHub, running_hub
from tests.integration.loopback import free_port
from tests.integration.netnskit import NetnsHost, netns_fleet
from tests.integration.sshkit import SshHost, require_sshd, start_sshd, stop

if TYPE_CHECKING:
    from deployer.adapters.docker_engine import DockerEngine


# --- llama-server ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def llama_server_prefix() -> str:
    """The llama-server build the benchmarks' _llama helpers run (DEPLOYER_LLAMA_PREFIX, else
    the default cache); skips when there is none."""
    import os

    from deployer.adapters.image_build import default_prefix

    prefix = os.environ.get("DEPLOYER_LLAMA_PREFIX") or str(default_prefix())
    if not (Path(prefix) / "bin" / "llama-server").exists():
        pytest.skip("no llama-server: run scripts/build-llama.sh (CI does)")
    os.environ["DEPLOYER_LLAMA_PREFIX"] = prefix
    return prefix


# --- Docker ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def engine() -> DockerEngine:
    """A connected engine; the Docker tests skip only when none answers."""
    pytest.importorskip(
        "docker", reason="the Docker SDK is not installed (pip install '.[docker]')"
    )
    from deployer.adapters.docker_engine import DockerEngine
    from deployer.core.errors import EngineUnavailable

    eng = DockerEngine()
    try:
        eng.engine_available()
    except EngineUnavailable as exc:
        pytest.skip(f"no Docker engine answers, Docker tests skipped: {exc.message()}")
    _remove_stale_test_containers(eng)
    return eng


def _remove_stale_test_containers(eng: DockerEngine) -> None:
    """Containers an earlier, killed test run left (test deployments are all named `t-...`, or
    carry TEST_LABEL): the tests that list deployments would count them as their own."""
    from deployer.core.serve.containers import NAME_LABEL

    client = eng.client()
    stale = {
        c.id: c
        for flt in ({"label": TEST_LABEL}, {"label": NAME_LABEL})
        for c in client.containers.list(all=True, filters=flt, ignore_removed=True)
        if flt["label"] == TEST_LABEL or str(c.labels.get(NAME_LABEL, "")).startswith("t-")
    }
    for c in stale.values():
        print(f"removing {c.name}: left by an earlier test run")
        c.remove(force=True)


@pytest.fixture(scope="session")
def runtime_image(engine: DockerEngine) -> str:
    """The local llama-server image (built once, then reused)."""
    from deployer.adapters.image_build import build_runtime_image

    return build_runtime_image(engine=engine).tag


@pytest.fixture(scope="session")
def demo_model() -> Path:
    """The demo GGUF on the host."""
    from deployer.adapters.local_models import demo_model_path

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


@pytest.fixture(scope="module")
def bench_deployment(engine: DockerEngine, runtime_image: str,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[BenchDeployment]:  # fmt: skip
    """The demo deployed once for a module at 4 slots with an API key; down afterwards.
    Its state dir outlives each test's own: a test points DEPLOYER_STATE_DIR at `.state`."""
    with pytest.MonkeyPatch.context() as mp:
        yield from deployed_for_bench(mp, tmp_path_factory.mktemp("bench-state"))


# --- Prometheus -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    """Debian's prometheus binary (promtool beside it). Outside CI a machine without it skips;
    in CI (DEPLOYER_CI=1, set by .ci/run, which installs it) its absence fails the test."""
    import os

    found = shutil.which("prometheus")
    if found is None or shutil.which("promtool") is None:
        reason = "prometheus is not installed (apt-get install prometheus)"
        if os.environ.get("DEPLOYER_CI"):
            pytest.fail(f"{reason}, but .ci/run should have installed it")
        pytest.skip(reason)
    return found


# --- fleet hosts ----------------------------------------------------------------------------


@pytest.fixture
def host_root() -> Iterator[Path]:
    """Folders the hosts write to, traversable by the container user (pytest's are 0700)."""
    root = Path(tempfile.mkdtemp(prefix="deployer-fleet-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def ssh_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshHost]:
    """sshd on a free loopback port."""
    require_sshd()
    proc, host = start_sshd(tmp_path_factory.mktemp("sshd"), address="127.0.0.1",
                            port=free_port())  # fmt: skip
    try:
        yield host
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def netns_hosts(engine: DockerEngine, runtime_image: str) -> Iterator[list[NetnsHost]]:
    """Two namespace hosts, each with its own engine holding the runtime image, and sshd."""
    yield from netns_fleet(engine, runtime_image, 2)


# --- Hugging Face Hub -----------------------------------------------------------------------


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackHub]:
    """A LoopbackHub with huggingface_hub pointed at it, for one test."""
    yield from running_hub(monkeypatch)


# --- deployer eval ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eval_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The demo model served twice by native llama-servers: 'plain', and 'letters' whose
        default grammar allows only lowercase letters and spaces (so it cannot write a digit); and a
    'judge' whose grammar lets it say only PASS or FAIL (a real model grading, however small)."""
    from deployer.adapters.local_models import demo_model_path
    from tests.integration.evalkit import llama_server_binary, start_llama, stop_process

    binary = llama_server_binary()
    if binary is None:
        pytest.skip(
            "no llama-server build: run 'bash scripts/build-llama.sh' or set DEPLOYER_LLAMA_PREFIX"
        )
    logs = tmp_path_factory.mktemp("eval-servers")
    model = demo_model_path()
    started = []
    try:
        plain = start_llama(binary, model, [], logs / "plain.log")
        started.append(plain[0])
        letters = start_llama(
            binary, model, ["--grammar", "root ::= [a-z ]+"], logs / "letters.log"
        )
        started.append(letters[0])
        judge = start_llama(
            binary, model, ["--grammar", 'root ::= "PASS" | "FAIL"'], logs / "judge.log"
        )
        started.append(judge[0])
        yield {"plain": plain[1], "letters": letters[1], "judge": judge[1]}
    finally:
        for proc in started:
            stop_process(proc)
