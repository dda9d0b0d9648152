"""Hostile state files against `ps`, `logs NAME` and `down NAME`: a result or one line, never a
traceback or a hang, and never a signal, deletion or removal outside deployer's own state.

The container engine is the edge here (unit tests need nothing running): an in-memory engine
that lists one labelled container and one labelled volume, and records every removal it is
asked for. Processes and files are real: a victim process and a file outside the state dir must
survive every example.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
import typer.testing
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import deployer.cli.deployments  # noqa: F401  (registers ps, logs, down)
import deployer.cli.wiring as wiring
from deployer.adapters.data_files import state_dir
from deployer.adapters.native import NativeProcess, save_process
from deployer.adapters.secrets import write_api_key
from deployer.adapters.state_store import record_path
from deployer.cli.app import app
from deployer.core.errors import KeyFileExists
from deployer.core.serve.containers import NAME_LABEL, ContainerInfo, EngineInfo

NAME = "web"
OURS = "c" * 64  # the container labelled io.deployer.name=web
VOLUME = "web-store"  # the volume labelled for web


class RecordingEngine:
    """The container engine's seam, in memory: what exists, and what it was asked to remove."""

    def __init__(self) -> None:
        self.removed: list[tuple[str, str]] = []

    def engine_available(self) -> EngineInfo:
        return EngineInfo("test", "1.41", "linux", "amd64", "memory")

    def list_deployer_containers(self) -> list[ContainerInfo]:
        return [ContainerInfo(OURS, NAME, "img", {NAME_LABEL: NAME}, "running", "healthy", None)]

    def list_deployer_volumes(self) -> dict[str, str]:
        return {VOLUME: NAME}

    def container_logs(self, *, container_id: str, tail: int, follow: bool) -> Iterator[str]:
        yield f"log of {container_id}"

    def stop_and_remove(self, *, name_or_id: str, timeout_s: float = 10.0) -> bool:
        self.removed.append(("container", name_or_id))
        return True

    def remove_network(self, *, name: str) -> bool:
        # The adapter removes only networks labelled io.deployer.name (test_docker_cli.py);
        # none here is.
        self.removed.append(("network", name))
        return False

    def remove_volume(self, *, name: str) -> bool:
        self.removed.append(("volume", name))
        return True


@pytest.fixture(scope="module")
def victim() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process of this user: no state file may get it signalled."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, victim: subprocess.Popen[bytes]
) -> dict[str, Any]:
    engine = RecordingEngine()
    monkeypatch.setattr(wiring, "docker_engine", lambda: engine)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("the user's")
    return {"engine": engine, "outside": outside, "victim": victim}


class Timeout(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise Timeout


# Built once: typer rebuilding the click command on every invoke would be most of the time.
COMMAND = typer.main.get_command(app)


def _run(*args: str) -> Any:
    """Invoke the CLI; a command still running after 20 s is a hang."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(20)
    try:
        with pytest.MonkeyPatch.context() as m:
            m.setattr(typer.testing, "_get_command", lambda _app: COMMAND)
            return CliRunner().invoke(app, list(args))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _check_one_outcome(result: Any, what: str) -> None:
    assert not isinstance(result.exception, Timeout), f"{what} hung"
    if result.exit_code == 0:
        return
    assert isinstance(result.exception, SystemExit), f"{what}: {result.exception!r}"
    assert result.exit_code in (1, 2, 3), what
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{what}: {result.stderr!r}"
    assert "Traceback" not in result.output


def _check_untouched(world: dict[str, Any]) -> None:
    assert world["victim"].poll() is None, "an unrelated process was signalled"
    assert (world["outside"] / "keep.txt").read_text() == "the user's"
    for kind, target in world["engine"].removed:
        # Only what is labelled for this deployment (networks: the adapter checks their labels).
        assert (kind, target) in {("container", OURS), ("volume", VOLUME)} or kind == "network"


def _exercise(world: dict[str, Any], data: bytes) -> None:
    """Write `data` as web's record, then ps, ps --json, logs and down must each behave."""
    folder = record_path(NAME).parent
    folder.mkdir(parents=True, exist_ok=True)
    record_path(NAME).write_bytes(data)
    world["engine"].removed.clear()
    for args in (["ps"], ["ps", "--json"], ["logs", NAME, "-n", "3"], ["down", NAME]):
        result = _run(*args)
        _check_one_outcome(result, " ".join(args))
        if args == ["ps", "--json"] and result.exit_code == 0:
            rows = {r["name"]: r for r in json.loads(result.stdout)}
            assert NAME in rows and (rows[NAME]["status"] != "invalid" or rows[NAME]["problem"])
    _check_untouched(world)
    record_path(NAME).unlink(missing_ok=True)


def _valid_record(world: dict[str, Any], runtime_kind: str) -> dict[str, Any]:
    return {
        "name": NAME,
        "model": "demo",
        "quant": "Q4_K_M",
        "backend": "llamacpp",
        "runtime": runtime_kind,
        "endpoint": "http://127.0.0.1:18080",
        "port": 18080,
        "created_at": "2025-01-01T00:00:00+00:00",
        "container_id": OURS if runtime_kind == "container" else None,
        "pid": world["victim"].pid if runtime_kind == "native" else None,
        "image": "img",
        "api_key_path": None,
        "files": [],
        "networks": [],
        "volumes": [],
        "log_path": None,
        "schema_version": 1,
    }


def _hostile_values(world: dict[str, Any]) -> st.SearchStrategy[Any]:
    outside = str(world["outside"] / "keep.txt")
    numbers = [1, -1, 0, "1", 2**63, -(2**63), 10**30, True, None, 1.5, [], {}]
    pids = [world["victim"].pid, os.getpid(), os.getppid()]
    paths = [
        "../../../../etc/passwd", "/dev/zero", "/proc/self/mem", outside, str(world["outside"]),
        f"{state_dir()}/deployments/other.json",
    ]  # fmt: skip
    texts = [
        "a\nb",
        "\x1b[31mred",
        "{{ lookup('pipe', 'id') }}",
        "postgres_data",
        "-rf",
        "x" * 5000,
    ]
    lists = [[outside], ["../../x"], ["/dev/zero"], ["postgres_data"]]
    return st.one_of(
        st.sampled_from([*numbers, *pids, *paths, *texts, *lists]),
        st.integers(),
        st.text(max_size=40),
        st.lists(st.text(max_size=20), max_size=4),
    )


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)


@given(data=st.binary(max_size=512))
def test_random_bytes(world: dict[str, Any], data: bytes) -> None:
    _exercise(world, data)


@given(value=JSON)
def test_random_json(world: dict[str, Any], value: Any) -> None:
    _exercise(world, json.dumps(value).encode())


@given(data=st.data(), runtime_kind=st.sampled_from(["container", "native"]))
def test_mutated_valid_records(
    world: dict[str, Any], data: st.DataObject, runtime_kind: str
) -> None:
    raw = _valid_record(world, runtime_kind)
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from([*raw, "extra"]))
        raw[key] = data.draw(_hostile_values(world))
    _exercise(world, json.dumps(raw).encode())


@given(
    pid=st.sampled_from(["victim", "self", 1]),
    argv=st.sampled_from(["victim's", "server's"]),
    start=st.sampled_from(["real", "other"]),
)
def test_a_forged_pid_file_never_gets_another_process_signalled(
    world: dict[str, Any], pid: Any, argv: str, start: str
) -> None:
    """A valid native record and a pid file pointing at a process deploy did not start (not
    the leader of its own session, or not the recorded command line or start time)."""
    import psutil

    victim = world["victim"].pid
    target = {"victim": victim, "self": os.getpid()}.get(pid, pid)
    real = psutil.Process(target)
    cmd = real.cmdline() if argv == "victim's" else ["llama-server", "--port", "18080"]
    created = real.create_time() if start == "real" else 1.0
    save_process(NAME, NativeProcess(target, created, cmd, "/dev/zero"))
    raw = _valid_record(world, "native") | {"pid": target, "log_path": "/dev/zero"}
    _exercise(world, json.dumps(raw).encode())


@pytest.mark.parametrize("kind", ["dir", "zero", "fifo", "huge"])
def test_state_files_that_are_not_files(world: dict[str, Any], kind: str) -> None:
    path = record_path(NAME)
    path.parent.mkdir(parents=True)
    if kind == "dir":
        path.mkdir()
    elif kind == "zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes(b" " * 10_000_000)
    ps = _run("ps")
    assert ps.exit_code == 0 and f"{NAME}: invalid: state file {path}" in ps.stdout
    assert f"rm -- {path}" in ps.stdout
    for args in (["logs", NAME], ["down", NAME]):
        result = _run(*args)
        _check_one_outcome(result, " ".join(args))
        assert result.exit_code == 1 and str(path) in result.stderr
    assert os.path.lexists(path)  # the user decides; down does not guess
    _check_untouched(world)
    assert world["engine"].removed == []


def test_down_all_clears_the_good_and_names_the_bad(world: dict[str, Any]) -> None:
    good = _valid_record(world, "container")
    record_path(NAME).parent.mkdir(parents=True)
    record_path(NAME).write_text(json.dumps(good))
    record_path("broken").write_text("{")
    result = _run("down", "--all")
    assert result.exit_code == 1
    assert "web: state removed" in result.stdout
    assert "broken: left alone: state file" in result.stdout
    assert result.stderr.count("\n") == 1 and "1 invalid state file(s) left alone" in result.stderr
    assert record_path("broken").exists() and not record_path(NAME).exists()
    assert world["engine"].removed == [("container", OURS), ("volume", VOLUME)]


def test_down_removes_only_the_key_deploy_generated(world: dict[str, Any]) -> None:
    key = write_api_key(NAME, for_container=False)
    outside = world["outside"] / "keep.txt"
    for path, kept in ((str(outside), True), (str(key), False)):
        raw = _valid_record(world, "container") | {"api_key_path": path}
        record_path(NAME).parent.mkdir(parents=True, exist_ok=True)
        record_path(NAME).write_text(json.dumps(raw))
        result = _run("down", NAME)
        assert result.exit_code == 0, result.output
        assert outside.exists()
        assert key.exists() == kept
        assert ("left alone" in result.stdout) == kept


def test_an_existing_key_file_is_never_overwritten() -> None:
    key = write_api_key(NAME)
    before = key.read_bytes(), key.stat().st_mtime_ns
    with pytest.raises(KeyFileExists) as err:
        write_api_key(NAME)
    assert (key.read_bytes(), key.stat().st_mtime_ns) == before
    assert str(key) in err.value.message() and f"deployer down {NAME}" in err.value.message()


def test_a_session_leader_with_the_port_on_its_command_line_is_still_not_ours(
    world: dict[str, Any],
) -> None:
    """What the old check took as proof (the record's port on the pid's command line) is not:
    without the pid file deploy wrote, with its start time and exact argv, nothing is signalled."""
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "--port", "18080"],
        start_new_session=True,
    )
    try:
        raw = _valid_record(world, "native") | {"pid": bystander.pid}
        record_path(NAME).parent.mkdir(parents=True)
        record_path(NAME).write_text(json.dumps(raw))
        ps = _run("ps", "--json")
        assert [r["status"] for r in json.loads(ps.stdout)] == ["gone"]
        down = _run("down", NAME)
        assert down.exit_code == 0
        assert f"pid {bystander.pid} is not the server deploy started" in down.stdout
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_the_process_deploy_started_is_stopped_with_its_group(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """The positive case of the same checks: a server started by the supervisor (here a
    sleeping python with a child in its group) is recognised, stopped, its group with it."""
    import psutil

    from deployer.adapters.native import NativeSupervisor, process_file

    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', " \
        "'import time; time.sleep(60)']); time.sleep(60)"  # fmt: skip
    argv = [sys.executable, "-c", code, "--port", "18080"]
    proc = NativeSupervisor().start(name=NAME, argv=argv, log_path=tmp_path / "srv.log")
    server = psutil.Process(proc.pid)
    try:
        for _ in range(100):
            if server.children():
                break
            time.sleep(0.05)
        (child,) = server.children()
        raw = _valid_record(world, "native") | {"pid": proc.pid}
        record_path(NAME).parent.mkdir(parents=True)
        record_path(NAME).write_text(json.dumps(raw))
        ps = _run("ps", "--json")
        assert [r["status"] for r in json.loads(ps.stdout)] == ["unhealthy"]  # alive, no /health
        down = _run("down", NAME)
        assert down.exit_code == 0 and f"stopped pid {proc.pid}" in down.stdout, down.output
        assert not process_file(NAME).exists()
        child.wait(timeout=5)  # the group went with it
        _check_untouched(world)
    finally:
        with contextlib.suppress(psutil.Error):
            for p in [*server.children(), server]:
                p.kill()


def test_a_record_file_name_with_escape_sequences_is_shown_escaped(world: dict[str, Any]) -> None:
    folder = record_path(NAME).parent
    folder.mkdir(parents=True)
    (folder / "\x1b]0;pwned\x07x\n.json").write_text("{")
    for args in (["ps"], ["ps", "--json"], ["down", "--all"]):
        result = _run(*args)
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout, args
    assert "invalid: state file " in _run("ps").stdout
