"""`deployer detect --json` on the real machine: no mocking."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import psutil


def _deployer() -> list[str]:
    script = Path(sys.executable).parent / "deployer"
    if script.exists():
        return [str(script)]
    found = shutil.which("deployer")
    assert found, "the deployer console script is not installed (pip install -e .)"
    return [found]


def _has_accelerator() -> bool:
    return platform.system() == "Darwin" or any(
        shutil.which(tool) for tool in ("nvidia-smi", "rocm-smi")
    )


def test_detect_json_reports_this_machine() -> None:
    done = subprocess.run(
        [*_deployer(), "detect", "--json"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    if not _has_accelerator():
        # On a GPU machine the kind is the GPU's; this project's CI and dev machines are CPU-only.
        assert data["kind"] == "cpu"
        assert data["gpus"] == []
        assert data["profile"].startswith(("cpu-", "detected-cpu-"))
        assert data["match"] in ("exact", "ad-hoc")
    assert data["cpu"]["threads"] == os.cpu_count()
    assert data["cpu"]["cores"] == (psutil.cpu_count(logical=False) or os.cpu_count())
    if data["kind"] != "apple":
        assert data["ram_bytes"] == psutil.virtual_memory().total
    assert data["reason"]
