"""Helpers for benchmarks that run a real llama-server (built by scripts/build-llama.sh)."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def llama_prefix() -> Path:
    """Install prefix of the cached llama.cpp build, building it on a miss."""
    env = os.environ.get("DEPLOYER_LLAMA_PREFIX")
    if env:
        return Path(env)
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-llama.sh")],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerRun:
    """What one llama-server start logged and used."""

    log: str
    rss_bytes: int
    seconds_to_healthy: float


def run_server(model: Path, args: list[str], timeout_s: float = 120.0) -> ServerRun:
    """Start llama-server -v with `args`, wait for /health 200, record RSS, stop it."""
    import psutil

    port = free_port()
    binary = llama_prefix() / "bin" / "llama-server"
    cmd = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-v", *args]
    t0 = time.monotonic()
    # A file, not a pipe: -v logs megabytes and a full pipe would block the server.
    logf = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, text=True)
    rss = 0
    healthy_at = 0.0
    try:
        while time.monotonic() - t0 < timeout_s:
            if proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        healthy_at = time.monotonic() - t0
                        rss = psutil.Process(proc.pid).memory_info().rss
                        break
            except OSError:
                time.sleep(0.2)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        logf.seek(0)
        out = logf.read()
        logf.close()
    if not healthy_at:
        raise RuntimeError(f"llama-server did not become healthy: {' '.join(cmd)}\n{out[-3000:]}")
    return ServerRun(log=out, rss_bytes=rss, seconds_to_healthy=healthy_at)
