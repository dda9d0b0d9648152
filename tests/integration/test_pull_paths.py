"""Both byte paths of a pull: direct socket reads (default) and huggingface_hub's session.

Each must survive cut connections, refuse corrupt bytes and leave the standard cache layout;
the direct path must hand anything it does not handle itself back to the library.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from huggingface_hub import scan_cache_dir, try_to_load_from_cache

from deployer.adapters.clock import SystemClock
from deployer.adapters.download import HfCacheStore
from deployer.adapters.http_range import library_is_default, open_range
from deployer.adapters.local_files import LocalDisk
from deployer.core.errors import ChecksumMismatch
from deployer.core.pull.files import pull_model
from tests.integration.hubserver import LoopbackHub
from tests.integration.test_pull_hub import make_gguf

MiB = 1024 * 1024
NAME = "paths-Q4_K_M.gguf"


@pytest.fixture
def src(hub: LoopbackHub, tmp_path: Path) -> Path:
    # several 1 MiB blocks, and an odd tail
    path = make_gguf(tmp_path / "src" / NAME, 5 * MiB + 123)
    hub.add_repo("test/paths", {NAME: path})
    return path


def store(direct: bool, connections: int) -> HfCacheStore:
    return HfCacheStore(direct_reads=direct, connections=connections, block_bytes=MiB)


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "library"])
@pytest.mark.parametrize("connections", [1, 3])
def test_cut_connections_complete_and_verify(
    hub: LoopbackHub, src: Path, tmp_path: Path, direct: bool, connections: int
) -> None:
    hub.cut_after[f"test/paths/{NAME}"] = 300_000  # every response ends early
    result = pull_model(
        "hf://test/paths", store=store(direct, connections), files=LocalDisk(), clock=SystemClock()
    )
    assert result.files[0].verified
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    assert result.files[0].sha256 == digest
    assert hub.served("test/paths", NAME) == src.stat().st_size  # no byte fetched twice
    cached = try_to_load_from_cache("test/paths", NAME, cache_dir=tmp_path / "hf" / "hub")
    assert isinstance(cached, str) and Path(cached).read_bytes() == src.read_bytes()
    info = scan_cache_dir(tmp_path / "hf" / "hub")
    assert not info.incomplete_files and not info.warnings


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "library"])
def test_corrupt_bytes_refused(hub: LoopbackHub, src: Path, tmp_path: Path, direct: bool) -> None:
    hub.corrupt.add(f"test/paths/{NAME}")
    with pytest.raises(ChecksumMismatch):
        pull_model(
            "hf://test/paths", store=store(direct, 2), files=LocalDisk(), clock=SystemClock()
        )
    assert not list((tmp_path / "hf" / "hub").glob("*/blobs/*"))


def test_direct_reads_hand_errors_to_the_library(hub: LoopbackHub, src: Path) -> None:
    base = f"{hub.url}/test/paths/resolve/main/"
    assert library_is_default()
    with open_range(base + NAME, {}, 10, 19, 5.0) as body:  # type: ignore[union-attr]
        assert body.status == 206
        view = memoryview(bytearray(64))
        got = b""
        while n := body.readinto(view):
            got += bytes(view[:n])
    assert got == src.read_bytes()[10:20]
    # a status the library maps to a typed error is not read here
    assert open_range(base + "missing.gguf", {}, 0, 9, 5.0) is None


def test_proxy_in_environment_goes_through_the_library(
    hub: LoopbackHub, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    url = f"http://example.invalid/test/paths/resolve/main/{NAME}"
    assert open_range(url, {}, 0, 9, 5.0) is None
