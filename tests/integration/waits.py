"""Polling helpers shared by the integration tests (no Docker needed)."""

from __future__ import annotations

import time
import urllib.request


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
