"""The real Prometheus (Debian's `prometheus` package) run on loopback for a test, and its HTTP
API read back. The fixture that finds the binaries is in conftest.py."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.integration.loopback import free_port, wait_http_200


@contextmanager
def running_prometheus(binary: str, config: Path, data: Path) -> Iterator[str]:
    """Prometheus on 127.0.0.1 with `config`, storing under `data`; yields its base URL."""
    port = free_port()
    log = (data.parent / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={data}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_http_200(f"{url}/-/ready", timeout_s=60), "Prometheus did not become ready"
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def query(url: str, promql: str) -> list[dict[str, Any]]:
    """An instant query's result vector (Prometheus's /api/v1/query)."""
    q = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_for_value(url: str, promql: str, timeout_s: float = 90) -> float | None:
    """Poll until `promql` gives one series with a value > 0; that value, or None."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        got = query(url, promql)
        if got and float(got[0]["value"][1]) > 0:
            return float(got[0]["value"][1])
        time.sleep(1)
    return None


def targets(url: str) -> list[dict[str, Any]]:
    """The active scrape targets with their health and last error."""
    with urllib.request.urlopen(f"{url}/api/v1/targets", timeout=10) as r:
        body = json.loads(r.read())
    active: list[dict[str, Any]] = body["data"]["activeTargets"]
    return active
