"""Loopback helpers shared by the integration tests: a free port, waiting for an HTTP 200."""

from __future__ import annotations

import socket
import time
import urllib.request


def free_port() -> int:
    """An unused TCP port on 127.0.0.1, chosen by the kernel (never the same twice in a row),
    so tests running side by side do not race for one port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http_200(url: str, timeout_s: float = 90, poll_s: float = 0.1) -> bool:
    """Poll `url` until it answers 200; False after `timeout_s`."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(poll_s)
    return False
