"""Looking a file up in the Hugging Face cache trusts nothing the cache holds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deployer.adapters.download import HfCacheStore, repo_folder
from deployer.core.errors import DeployerError

COMMIT = "c" * 40


def _cache(tmp_path: Path) -> tuple[HfCacheStore, Path]:
    store = HfCacheStore(cache_dir=tmp_path / "hub")
    return store, tmp_path / "hub" / repo_folder("org/repo")


def test_refs_main_pointing_outside_the_cache_is_ignored(tmp_path: Path) -> None:
    store, repo = _cache(tmp_path)
    evil = tmp_path / "evil" / "x"
    evil.mkdir(parents=True)
    (evil / "m.gguf").write_bytes(b"GGUF")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("../../../../evil/x")
    (repo / "snapshots").mkdir()
    assert store.cached_file("org/repo", "m.gguf") is None


def test_a_commit_snapshot_is_found_and_a_link_to_dev_zero_is_no_ref(tmp_path: Path) -> None:
    store, repo = _cache(tmp_path)
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (snap / "m.gguf").write_bytes(b"GGUF")
    (repo / "refs").mkdir()
    os.symlink("/dev/zero", repo / "refs" / "main")
    assert store.cached_file("org/repo", "m.gguf") == snap / "m.gguf"


def test_a_traversing_file_name_is_refused(tmp_path: Path) -> None:
    store, _ = _cache(tmp_path)
    with pytest.raises(DeployerError):
        store.cached_file("org/repo", "../../x.gguf")
