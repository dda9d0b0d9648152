"""Kill `deployer pull` mid-download (SIGKILL, a real process), rerun: it resumes and verifies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import scan_cache_dir

from tests.integration.hubserver import LoopbackHub
from tests.integration.test_pull_hub import make_gguf, sha

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]
CLI = "import sys; from deployer.cli.app import main; sys.argv[0] = 'deployer'; main()"


def start_pull(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CLI, "pull", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


@pytest.mark.parametrize("connections", ["1", "3"])
def test_sigkill_at_half_then_resume(hub: LoopbackHub, tmp_path: Path, connections: str) -> None:
    size = 40 * MiB
    src = make_gguf(tmp_path / "src" / "big-Q4_K_M.gguf", size)
    hub.add_repo("test/big", {"big-Q4_K_M.gguf": src})
    key = "test/big/big-Q4_K_M.gguf"
    hub.throttle_bps[key] = 20 * MiB
    args = ("hf://test/big", "--connections", connections, "--json")
    proc = start_pull(*args)
    deadline = time.monotonic() + 30
    while hub.served("test/big", "big-Q4_K_M.gguf") < size // 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = hub.served("test/big", "big-Q4_K_M.gguf")
    assert first < size
    cache = tmp_path / "hf" / "hub"
    assert scan_cache_dir(cache).incomplete_files  # the partial is there to resume from

    hub.throttle_bps.clear()
    proc = start_pull(*args)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    got = json.loads(out)
    total = hub.served("test/big", "big-Q4_K_M.gguf")
    refetched = total - size
    assert refetched <= size * 0.02, f"fetched {refetched} bytes twice"
    assert got["bytes_reused"] >= first - size * 0.02
    assert got["files"][0]["sha256"] == sha(src) and got["files"][0]["verified"] is True
    info = scan_cache_dir(cache)
    assert not info.incomplete_files and not info.warnings
    assert not list(cache.glob("*/blobs/*.progress"))
