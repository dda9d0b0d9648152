"""The real `FleetLink` of `fleet bench` (deployer/adapters/ssh_tunnel.py) against a real sshd
on 127.0.0.1 (sshkit): a tunnel reaches a server on the "host's" loopback, and is closed when
its `with` ends, on an error, on Ctrl-C and when deployer is sent SIGTERM; an unknown host key
is refused; the API key is read over ssh, bounded, and refused when it is not one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deployer.adapters.ssh_tunnel import SshLink
from deployer.core.errors import TunnelFailed
from deployer.core.fleet.routes import SshRoute
from tests.integration.sshkit import SshHost


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the host"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    """An HTTP server on 127.0.0.1 (the sshd's host is this machine: its loopback is ours)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield int(httpd.server_address[1])
    httpd.shutdown()


def _route(ssh: SshHost, known: Path) -> SshRoute:
    return SshRoute(host="h1", address=ssh.address, port=ssh.port, user=ssh.user,
                    key_file=str(ssh.key), known_hosts=(str(known),))  # fmt: skip


@pytest.fixture
def known(ssh_host: SshHost, tmp_path: Path) -> Path:
    key = (ssh_host.key.parent / "host_key.pub").read_text().strip()
    path = tmp_path / "known_hosts"
    path.write_text(f"[{ssh_host.address}]:{ssh_host.port} {key}\n")
    return path


def _tunnels(port: int) -> list[int]:
    """ssh tunnels to the sshd on `port` (not those other tests may hold)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0] == b"ssh" and b"-L" in argv and str(port).encode() in argv:
            out.append(int(pid))
    return out


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return bytes(resp.read()).decode()


def test_a_tunnel_reaches_the_hosts_loopback_and_closes_whatever_happens(
    ssh_host: SshHost, known: Path, server: int
) -> None:
    link, route = SshLink(), _route(ssh_host, known)
    before = set(_tunnels(ssh_host.port))
    with link.tunnel(route, server) as endpoint:
        assert _get(endpoint) == "hello from the host"
        assert endpoint != f"http://127.0.0.1:{server}"  # through a port of its own
        assert set(_tunnels(ssh_host.port)) - before
    assert set(_tunnels(ssh_host.port)) == before
    for raised in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(raised)), link.tunnel(route, server) as endpoint:
            _get(endpoint)
            raise raised
        assert set(_tunnels(ssh_host.port)) == before


def test_an_unknown_host_key_is_refused(ssh_host: SshHost, tmp_path: Path, server: int) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(TunnelFailed) as err, SshLink().tunnel(_route(ssh_host, empty), server):
        pass
    assert "Host key verification failed" in err.value.message()
    assert "never turns host key checking off" in err.value.message()


def test_the_key_is_read_bounded_and_checked(
    ssh_host: SshHost, known: Path, tmp_path: Path
) -> None:
    link, route = SshLink(), _route(ssh_host, known)
    (tmp_path / "api_key").write_text("a" * 64 + "\n")
    assert link.read_key(route, str(tmp_path / "api_key")) == "a" * 64
    (tmp_path / "big").write_text("a" * 10_000)
    (tmp_path / "two").write_text("secret-one secret-two\n")
    for name, problem in (("big", "larger than"), ("two", "one API key"),
                          ("missing", "cannot read the API key")):  # fmt: skip
        with pytest.raises(TunnelFailed) as err:
            link.read_key(route, str(tmp_path / name))
        assert problem in err.value.message() and "secret" not in err.value.message()


def test_sigterm_to_deployer_closes_its_tunnel(ssh_host: SshHost, known: Path, server: int) -> None:
    code = (
        "import sys, time\n"
        "from deployer.adapters.ssh_tunnel import SshLink\n"
        "from deployer.core.fleet.routes import SshRoute\n"
        f"route = SshRoute(host='h1', address={ssh_host.address!r}, port={ssh_host.port},"
        f" user={ssh_host.user!r}, key_file={str(ssh_host.key)!r}, known_hosts=({str(known)!r},))\n"
        "try:\n"
        f"    with SshLink().tunnel(route, {server}) as ep:\n"
        "        print(ep, flush=True)\n"
        "        time.sleep(60)\n"
        "except KeyboardInterrupt:\n"
        "    print('closed', flush=True)\n"
    )
    before = set(_tunnels(ssh_host.port))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})  # fmt: skip
    assert proc.stdout is not None
    endpoint = proc.stdout.readline().strip()
    assert _get(endpoint) == "hello from the host"
    assert set(_tunnels(ssh_host.port)) - before
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.readline().strip() == "closed"
    proc.wait(timeout=20)
    end = time.monotonic() + 5
    while set(_tunnels(ssh_host.port)) != before and time.monotonic() < end:
        time.sleep(0.1)
    assert set(_tunnels(ssh_host.port)) == before
