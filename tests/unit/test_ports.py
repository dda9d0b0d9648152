"""Ports: free is what a server can listen on; a name keeps its port; --port is 1-65535."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from deployer.adapters import state_store as state
from deployer.adapters.ports import choose_port, free_port, port_free
from deployer.cli.app import app


def _listening() -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def _leave_time_wait() -> int:
    """A port whose server is gone but whose closed connection is in TIME_WAIT (server side)."""
    server = _listening()
    port = int(server.getsockname()[1])
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server closes first, as llama-server does after a health answer
    client.recv(1)
    client.close()
    server.close()
    return port


def test_a_port_in_time_wait_is_free_for_a_server() -> None:
    port = _leave_time_wait()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # what the old probe did: "in use" for about a minute
    assert port_free("127.0.0.1", port)


def test_a_listening_port_is_taken_on_its_address_and_the_wildcard() -> None:
    with _listening() as held:
        port = int(held.getsockname()[1])
        assert not port_free("127.0.0.1", port)
        assert not port_free("0.0.0.0", port)
    assert port_free("127.0.0.1", port)


def test_a_name_gets_its_last_port_back_and_others_leave_it_free() -> None:
    first = free_port()
    state.remember_port("web", first)
    assert choose_port("web", None, "127.0.0.1").port == first
    assert choose_port("api", None, "127.0.0.1").port != first  # web's, while web is down
    assert choose_port("web", 18999, "127.0.0.1").port == 18999  # --port wins
    with _listening() as held:
        taken = int(held.getsockname()[1])
        state.remember_port("web", taken)
        moved = choose_port("web", None, "127.0.0.1")
        assert moved.port != taken and f"had port {taken} before, but it is taken" in moved.why


@pytest.mark.parametrize("port", ["0", "-1", "65536", "99999999999"])
def test_an_out_of_range_port_is_refused_in_one_line(port: str) -> None:
    r = CliRunner().invoke(app, ["deploy", "demo", "--profile", "cpu-x86-2c-8gb", "--port", port])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "out of range" in lines[0] and "1 to 65535" in lines[0], r.stderr
