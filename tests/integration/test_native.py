"""`deployer deploy --runtime native`: a real llama-server as a supervised local process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from deployer.adapters.image_build import default_prefix
from deployer.adapters.local_models import demo_model_path
from deployer.adapters.native import NativeSupervisor, log_path_for, process_file
from deployer.adapters.state_store import load_record
from deployer.cli.app import app
from deployer.core.errors import NativeExited
from tests.integration.loopback import free_port


def _llama_server() -> str | None:
    env = os.environ.get("DEPLOYER_LLAMA_PREFIX")
    prefix = Path(env) if env else default_prefix()
    if (prefix / "bin" / "llama-server").is_file():
        return str(prefix / "bin" / "llama-server")
    return shutil.which("llama-server")


pytestmark = [
    pytest.mark.llama_server,
    pytest.mark.skipif(
        _llama_server() is None,
        reason="no llama-server build: run 'bash scripts/build-llama.sh' or set "
        "DEPLOYER_LLAMA_PREFIX",
    ),
]

PROFILE = ["--profile", "cpu-x86-2c-8gb", "--runtime", "native"]


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def _servers_on(port: int) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "llama-server" in " ".join(cmd[:1]) and str(port) in cmd:
            found.append(p)
    return [p for p in found if p.status() != psutil.STATUS_ZOMBIE]


def _left_nothing(name: str, port: int) -> None:
    assert load_record(name) is None
    assert not process_file(name).exists()
    assert _servers_on(port) == []


def _post(url: str, body: dict[str, object], key: str | None = None) -> dict[str, object]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, json.dumps(body).encode(), headers)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return dict(json.loads(resp.read()))


def test_native_deploy_serves_shows_logs_and_downs_clean() -> None:
    port = free_port()
    code, out, err = _run(
        "deploy", "demo", *PROFILE, "--name", "n-ok", "--port", str(port), "--json"
    )
    assert code == 0, err
    got = json.loads(out)
    assert got["runtime"] == "native" and got["smoke"]["completion_tokens"] > 0
    # The demo has no chat template: proven by the count it must continue, and it does.
    assert got["smoke"]["kind"] == "completion" and got["smoke"]["matched"] is True, got["smoke"]
    rec = load_record("n-ok")
    assert rec is not None and rec.pid is not None and rec.pid == got["pid"]
    assert rec.runtime == "native"
    assert rec.log_path == str(log_path_for("n-ok"))
    assert stat.S_IMODE(os.stat(rec.log_path).st_mode) == 0o600
    argv = psutil.Process(rec.pid).cmdline()
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert os.getpgid(rec.pid) == rec.pid  # its own session: down can signal the group

    reply = _post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        {"model": "demo", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8},
    )
    assert reply["choices"]
    # The chat is formatted in the family's turns (the demo GGUF carries no template), not read
    # as the literal template text 'gemma' (3 prompt tokens whatever the message).
    shown = _post(
        f"http://127.0.0.1:{port}/apply-template",
        {"messages": [{"role": "user", "content": "Say hi"}]},
    )
    assert str(shown["prompt"]).startswith("<start_of_turn>user\nSay hi"), shown
    usage = reply["usage"]
    assert isinstance(usage, dict) and usage["prompt_tokens"] >= 8, usage

    code, out, err = _run("ps", "--json")
    assert code == 0, err
    (row,) = [r for r in json.loads(out) if r["name"] == "n-ok"]
    assert row["status"] == "healthy" and row["runtime"] == "native" and row["pid"] == rec.pid

    code, out, _ = _run("logs", "n-ok", "-n", "5")
    assert code == 0 and len(out.splitlines()) == 5

    code, out, err = _run("down", "n-ok")
    assert code == 0, err
    assert "stopped pid" in out and "state removed" in out
    assert not psutil.pid_exists(rec.pid) or psutil.Process(rec.pid).status() == "zombie"
    _left_nothing("n-ok", port)
    assert Path(rec.log_path).is_file()  # the log stays for the record

    code, out, _ = _run("down", "n-ok")
    assert code == 0 and "already gone" in out


def test_native_expose_uses_a_0600_key_file() -> None:
    port = free_port()
    code, out, err = _run(
        "deploy", "demo", *PROFILE, "--name", "n-key", "--port", str(port), "--expose", "--json"
    )
    assert code == 0, err
    key_path = Path(json.loads(out)["api_key_path"])
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    rec = load_record("n-key")
    assert rec is not None and rec.pid is not None
    argv = psutil.Process(rec.pid).cmdline()
    assert argv[argv.index("--api-key-file") + 1] == str(key_path)
    assert key_path.read_text().strip() not in " ".join(argv)
    with pytest.raises(urllib.error.HTTPError) as denied:
        _post(f"http://127.0.0.1:{port}/v1/chat/completions", {"messages": []})
    assert denied.value.code == 401
    code, _, err = _run("down", "n-key")
    assert code == 0, err
    assert not key_path.exists()
    _left_nothing("n-key", port)


def test_native_corrupt_model_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    src = demo_model_path()
    bad = tmp_path / "broken.gguf"
    with src.open("rb") as f:
        bad.write_bytes(f.read(src.stat().st_size // 2))
    port = free_port()
    code, _, err = _run("deploy", str(bad), *PROFILE, "--name", "n-bad", "--port", str(port))
    assert code != 0
    assert "Traceback" not in err
    assert "exited" in err or "truncated" in err.lower() or "broken.gguf" in err
    _left_nothing("n-bad", port)


def test_native_port_taken_is_refused() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = int(holder.getsockname()[1])
        code, _, err = _run("deploy", "demo", *PROFILE, "--name", "n-port", "--port", str(port))
    assert code == 1
    assert "already in use" in err
    assert load_record("n-port") is None and not process_file("n-port").exists()


def test_native_server_exit_reports_its_last_log_lines(tmp_path: Path) -> None:
    # A model llama-server cannot open (the GGUF reader catches truncation before it starts).
    server = _llama_server()
    assert server is not None
    sup = NativeSupervisor()
    log = tmp_path / "exit.log"
    proc = sup.start(name="n-exit", argv=[server, "-m", str(tmp_path / "none.gguf")], log_path=log)
    with pytest.raises(NativeExited) as exited:
        sup.wait_healthy(
            name="n-exit", proc=proc, endpoint=f"http://127.0.0.1:{free_port()}", timeout_s=30
        )
    msg = exited.value.message()
    assert "exited" in msg and str(log) in msg and "  | " in msg
    assert 0 < len(exited.value.last_logs) <= 20
    sup.forget(name="n-exit")
    assert not process_file("n-exit").exists()


def test_native_health_timeout_stops_the_server() -> None:
    port = free_port()
    code, _, err = _run(
        "deploy", "demo", *PROFILE, "--name", "n-slow", "--port", str(port), "--timeout", "0.05"
    )
    assert code == 1
    assert "not healthy after" in err and str(log_path_for("n-slow")) in err
    _left_nothing("n-slow", port)


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


def test_native_redeploy_right_after_down_keeps_its_port() -> None:
    """Health polls leave the server's side of each connection in TIME_WAIT; a redeploy on the
    same port right after `down` must still start, and without --port get that port back."""
    port = free_port()
    code, _, err = _run("deploy", "demo", *PROFILE, "--name", "n-again", "--port", str(port))
    try:
        assert code == 0, err
        for _ in range(200):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
                assert r.status == 200
        assert _run("down", "n-again")[0] == 0
        assert _time_waits(port) > 0  # what made the old check say "in use" for a minute
        code, out, err = _run(
            "deploy", "demo", *PROFILE, "--name", "n-again", "--port", str(port), "--json"
        )
        assert code == 0, err
        assert json.loads(out)["endpoint"] == f"http://127.0.0.1:{port}"
        assert _run("down", "n-again")[0] == 0
        code, out, err = _run("deploy", "demo", *PROFILE, "--name", "n-again", "--json")
        assert code == 0, err
        assert json.loads(out)["endpoint"] == f"http://127.0.0.1:{port}"
    finally:
        _run("down", "n-again")
    _left_nothing("n-again", port)
