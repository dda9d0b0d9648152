"""Whether a TCP port is free, asked the way a server asks it, and which port a deploy gets.

A port is free when a server can listen on it. llama-server (cpp-httplib) and docker-proxy (Go)
both set SO_REUSEADDR, so connections of an earlier server left in TIME_WAIT (every health poll
leaves one) do not stop them: the probe sets it too, then binds and listens. A plain bind without
SO_REUSEADDR would report such a port as taken for about a minute after `down`.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from deployer.adapters.state_store import remembered_ports
from deployer.core.errors import PortInUse

DEFAULT_PORT = 8080
SEARCH_SPAN = 200  # ports tried from DEFAULT_PORT up before giving up


def port_free(host_ip: str, port: int) -> bool:
    """Whether a server could listen on host_ip:port now (SO_REUSEADDR, bind, listen)."""
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host_ip, port))
            s.listen(1)
        except OSError:
            return False
    return True


def check_port_free(host_ip: str, port: int) -> None:
    """Refuse a port something already listens on (llama-server would only log it)."""
    if not port_free(host_ip, port):
        raise PortInUse(host_ip, port)


def free_port(
    host_ip: str = "127.0.0.1",
    start: int = DEFAULT_PORT,
    *,
    avoid: frozenset[int] | set[int] = frozenset(),
) -> int:
    """The first port from `start` up that a server could listen on, outside `avoid` if any is."""
    ports = range(start, min(start + SEARCH_SPAN, 65536))
    for port in [p for p in ports if p not in avoid] + [p for p in ports if p in avoid]:
        if port_free(host_ip, port):
            return port
    raise PortInUse(host_ip, start)


@dataclass(frozen=True)
class PortChoice:
    """The port a deploy publishes on, and why (printed on stderr)."""

    port: int
    why: str


def choose_port(name: str, requested: int | None, host_ip: str) -> PortChoice:
    """--port as given; else the port `name` last had, when free; else the first free one."""
    if requested is not None:
        return PortChoice(requested, "--port")
    remembered = remembered_ports()
    last = remembered.pop(name, None)
    if last is not None and port_free(host_ip, last):
        return PortChoice(last, f"the port '{name}' had before")
    # Ports other names had are taken last, so their redeploys find them free.
    port = free_port(host_ip, avoid=set(remembered.values()))
    if last is not None:
        return PortChoice(port, f"'{name}' had port {last} before, but it is taken now")
    return PortChoice(port, "a free port from 8080 up")
