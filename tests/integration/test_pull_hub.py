"""`deployer pull` against the loopback Hub with the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from huggingface_hub import hf_hub_download, scan_cache_dir, try_to_load_from_cache
from typer.testing import CliRunner

from deployer.adapters.clock import SystemClock
from deployer.adapters.download import HfCacheStore
from deployer.adapters.local_files import LocalDisk
from deployer.adapters.local_models import demo_model_path
from deployer.cli.app import app
from deployer.core.errors import NotEnoughDisk
from deployer.core.pull.files import DEMO_SHA256, pull_model
from tests.integration.hubserver import LoopbackHub
from tests.unit.test_gguf_meta import llama_spec, split_parts

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "hf" / "hub"


def make_gguf(path: Path, size: int) -> Path:
    """A file that starts like a GGUF, with distinct bytes so corruption shows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + os.urandom(size - 4))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def tiny(hub: LoopbackHub, tmp_path: Path) -> Path:
    path = make_gguf(tmp_path / "src" / "tiny-Q4_K_M.gguf", 3 * MiB + 17)
    hub.add_repo("test/tiny", {"tiny-Q4_K_M.gguf": path, "README.md": path})
    return path


def pull(*args: str) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(app, ["pull", *args, "--json"])
    data = json.loads(result.stdout) if result.exit_code == 0 else {}
    return result.exit_code, data, result.stderr


def test_download_then_reuse(hub: LoopbackHub, tiny: Path, cache: Path) -> None:
    code, first, err = pull("hf://test/tiny:Q4_K_M")
    assert code == 0, err
    commit = hub.repos["test/tiny"].commit
    entry = first["files"][0]
    assert first["revision"] == commit
    assert entry["sha256"] == sha(tiny) and entry["verified"] is True
    assert entry["bytes"] == tiny.stat().st_size == first["bytes_downloaded"]
    pointer = cache / "models--test--tiny" / "snapshots" / commit / "tiny-Q4_K_M.gguf"
    assert entry["path"] == str(pointer)
    assert os.readlink(pointer) == f"../../blobs/{entry['sha256']}"
    assert (cache / "models--test--tiny" / "refs" / "main").read_text() == commit
    # huggingface_hub sees our file as its own
    assert try_to_load_from_cache("test/tiny", "tiny-Q4_K_M.gguf", cache_dir=cache) == str(pointer)
    info = scan_cache_dir(cache)
    assert not info.warnings and not info.incomplete_files
    served = hub.served("test/tiny", "tiny-Q4_K_M.gguf")
    assert hf_hub_download("test/tiny", "tiny-Q4_K_M.gguf", cache_dir=cache) == str(pointer)
    code, second, err = pull("hf://test/tiny:Q4_K_M")
    assert code == 0, err
    assert second["bytes_downloaded"] == 0 and second["bytes_reused"] == entry["bytes"]
    assert second["files"][0]["verified"] is True
    assert hub.served("test/tiny", "tiny-Q4_K_M.gguf") == served


def test_file_placed_by_huggingface_hub_is_reused(
    hub: LoopbackHub, tiny: Path, cache: Path
) -> None:
    placed = hf_hub_download("test/tiny", "tiny-Q4_K_M.gguf", cache_dir=cache)
    served = hub.served("test/tiny", "tiny-Q4_K_M.gguf")
    code, got, err = pull("hf://test/tiny")
    assert code == 0, err
    assert got["files"][0]["path"] == placed
    assert got["bytes_downloaded"] == 0 and got["files"][0]["verified"] is True
    assert hub.served("test/tiny", "tiny-Q4_K_M.gguf") == served


def test_split_set_all_parts(hub: LoopbackHub, tmp_path: Path) -> None:
    parts = split_parts(tmp_path, llama_spec(), 3)
    hub.add_repo("test/split", {f"Q4_K_M/{p.name}": p for p in parts})
    code, got, err = pull("hf://test/split:Q4_K_M")
    assert code == 0, err
    assert [Path(f["path"]).name for f in got["files"]] == [p.name for p in parts]
    assert [f["sha256"] for f in got["files"]] == [sha(p) for p in parts]
    assert all(f["verified"] for f in got["files"])


def test_corrupt_bytes_are_refused_and_removed(hub: LoopbackHub, tiny: Path, cache: Path) -> None:
    hub.corrupt.add("test/tiny/tiny-Q4_K_M.gguf")
    code, _, err = pull("hf://test/tiny")
    assert code == 1
    bad = hashlib.sha256(bytes(b ^ 0x5A for b in tiny.read_bytes())).hexdigest()
    assert "tiny-Q4_K_M.gguf" in err and sha(tiny) in err and bad in err
    blobs = cache / "models--test--tiny" / "blobs"
    assert not list(blobs.iterdir())
    assert not (cache / "models--test--tiny" / "snapshots").exists()


def test_cut_connections_resume_in_process(hub: LoopbackHub, tiny: Path) -> None:
    hub.cut_after["test/tiny/tiny-Q4_K_M.gguf"] = MiB
    code, got, err = pull("hf://test/tiny", "--connections", "1")
    assert code == 0, err
    assert got["files"][0]["verified"] is True
    assert hub.served("test/tiny", "tiny-Q4_K_M.gguf") == tiny.stat().st_size


def test_partials_reused_and_stale_ones_cleaned(hub: LoopbackHub, tiny: Path, cache: Path) -> None:
    blobs = cache / "models--test--tiny" / "blobs"
    blobs.mkdir(parents=True)
    digest = sha(tiny)
    # what a killed huggingface_hub download leaves: a plain prefix under a unique name
    (blobs / f"{digest}.1a2b3c4d.incomplete").write_bytes(tiny.read_bytes()[: 2 * MiB])
    stale = blobs / f"{'e' * 64}.incomplete"  # a file of an older revision
    stale.write_bytes(b"x" * 1000)
    code, got, err = pull("hf://test/tiny")
    assert code == 0, err
    assert got["bytes_reused"] == 2 * MiB and got["bytes_cleaned"] == 1000
    assert hub.served("test/tiny", "tiny-Q4_K_M.gguf") == tiny.stat().st_size - 2 * MiB
    assert sorted(p.name for p in blobs.iterdir()) == [digest]


def test_gated_repo_says_what_to_do(hub: LoopbackHub, tmp_path: Path, cache: Path) -> None:
    path = make_gguf(tmp_path / "g.gguf", MiB)
    hub.add_repo("test/gated", {"g-Q4_K_M.gguf": path}, gated=True)
    code, _, err = pull("hf://test/gated")
    assert code == 1
    assert "gated" in err and "https://huggingface.co/test/gated" in err
    assert "hf auth login" in err and "HF_TOKEN" in err
    assert not list(cache.glob("*/blobs/*"))


def test_unknown_repo_revision_and_file(hub: LoopbackHub, tiny: Path) -> None:
    code, _, err = pull("hf://test/none")  # 401 RepoNotFound
    assert code == 1 and "test/none" in err
    code, _, err = pull("hf://test/tiny", "--revision", "v9")  # 404 RevisionNotFound
    assert code == 1 and "revision" in err
    code, _, err = pull("hf://test/tiny:Q8_0")  # no such quant in the listing
    assert code == 1 and "Q4_K_M" in err


def test_hub_unreachable_is_not_not_found(hub: LoopbackHub, tiny: Path) -> None:
    hub.stop()
    code, _, err = pull("hf://test/tiny")
    assert code == 3
    assert "unavailable" in err and "not found" not in err.lower()


@pytest.mark.parametrize(
    "name", ["../evil-Q4_K_M.gguf", "a/../../evil-Q4_K_M.gguf", "/tmp/evil-Q4_K_M.gguf"]
)
def test_traversal_names_refused(hub: LoopbackHub, tmp_path: Path, name: str) -> None:
    path = make_gguf(tmp_path / "e.gguf", MiB)
    hub.add_repo("test/evil", {name: path})
    code, _, err = pull("hf://test/evil:Q4_K_M")
    assert code == 2 and "Hub listing of test/evil: file name" in err and name in err
    assert not list(tmp_path.rglob("evil-Q4_K_M.gguf"))
    assert not Path("/tmp/evil-Q4_K_M.gguf").exists()
    assert hub.served("test/evil", name) == 0


def test_offline_with_and_without_cache(
    hub: LoopbackHub, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = pull("hf://test/tiny")
    assert code == 1 and "HF_HUB_OFFLINE" in err and "no cached snapshot" in err
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert pull("hf://test/tiny")[0] == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.stop()
    code, got, err = pull("hf://test/tiny")
    assert code == 0, err
    assert got["bytes_downloaded"] == 0 and got["files"][0]["verified"] is True


def _user_model(repo: str, file: str, size: int, parts: int = 1) -> str:
    """A user catalog entry (restricted licence) pointing at the loopback repo."""
    shipped = yaml.safe_load((ROOT / "catalog" / "llama-3.1-8b-instruct.yaml").read_text())
    shipped["id"] = "loopback-llama"
    shipped["quants"] = {
        "Q4_K_M": {"repo": repo, "file": file, "bytes": size, "split_parts": parts}
    }
    shipped["default_quant"] = "Q4_K_M"
    folder = Path(os.environ["DEPLOYER_CONFIG_DIR"]) / "models"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "loopback-llama.yaml").write_text(yaml.safe_dump(shipped))
    return str(shipped["license"]["url"])


def test_catalog_model_needs_accept_license(hub: LoopbackHub, tmp_path: Path) -> None:
    parts = split_parts(tmp_path, llama_spec(), 2)
    hub.add_repo("test/llama", {p.name: p for p in parts})
    url = _user_model("test/llama", parts[0].name, sum(p.stat().st_size for p in parts), 2)
    code, _, err = pull("loopback-llama")
    assert code == 2 and "--accept-license" in err and url in err and "llama3.1" in err
    assert hub.requests == []  # refused before asking the Hub anything
    code, got, err = pull("loopback-llama", "--accept-license")
    assert code == 0, err
    assert [Path(f["path"]).name for f in got["files"]] == [p.name for p in parts]


def test_offline_names_the_missing_catalog_files(
    hub: LoopbackHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = split_parts(tmp_path, llama_spec(), 2)
    hub.add_repo("test/llama", {p.name: p for p in parts})
    _user_model("test/llama", parts[0].name, 1000, 2)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = pull("loopback-llama", "--accept-license")
    assert code == 1 and parts[0].name in err and parts[1].name in err


def test_catalog_file_missing_from_repo(hub: LoopbackHub, tiny: Path) -> None:
    _user_model("test/tiny", "gone-Q4_K_M.gguf", 1000)
    code, _, err = pull("loopback-llama", "--accept-license")
    assert code == 1 and "gone-Q4_K_M.gguf" in err


def test_local_dir(hub: LoopbackHub, tiny: Path, tmp_path: Path, cache: Path) -> None:
    target = tmp_path / "models"
    code, got, err = pull("hf://test/tiny", "--local-dir", str(target))
    assert code == 0, err
    assert got["files"][0]["path"] == str(target / "tiny-Q4_K_M.gguf")
    assert sha(target / "tiny-Q4_K_M.gguf") == sha(tiny)
    assert not cache.exists() or not list(cache.glob("*/blobs/*"))
    served = hub.served("test/tiny", "tiny-Q4_K_M.gguf")
    # huggingface_hub's own --local-dir logic sees it as current: nothing fetched again
    hf_hub_download("test/tiny", "tiny-Q4_K_M.gguf", local_dir=target)
    code, again, _ = pull("hf://test/tiny", "--local-dir", str(target))
    assert code == 0 and again["bytes_downloaded"] == 0
    assert hub.served("test/tiny", "tiny-Q4_K_M.gguf") == served
    leftovers = list((target / ".cache" / "huggingface" / "download").glob("*.incomplete*"))
    assert leftovers == []


def test_not_enough_disk_refused_before_any_byte(hub: LoopbackHub, tiny: Path, cache: Path) -> None:
    with pytest.raises(NotEnoughDisk):
        pull_model("hf://test/tiny", store=HfCacheStore(), free_bytes=lambda _p: 1,
                   files=LocalDisk(), clock=SystemClock())  # fmt: skip
    assert hub.served("test/tiny", "tiny-Q4_K_M.gguf") == 0
    assert not list(cache.glob("*/blobs/*"))


def test_demo_file_through_the_hub(hub: LoopbackHub, cache: Path) -> None:
    demo = demo_model_path()
    hub.add_repo("test/gemma", {"gemma-3-270m-it-Q4_K_M.gguf": demo})
    code, got, err = pull("hf://test/gemma")
    assert code == 0, err
    assert got["files"][0]["sha256"] == DEMO_SHA256 and got["files"][0]["verified"] is True
    assert got["bytes_downloaded"] == demo.stat().st_size
    assert Path(got["files"][0]["path"]).resolve().stat().st_size == demo.stat().st_size


def test_verified_file_is_not_hashed_again_until_it_changes(
    hub: LoopbackHub, tiny: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reused blob is hashed once; the memo of that check (by path, size, mtime, inode) lets
    the next pull skip it, and any change to the file makes the next pull hash it again."""
    import deployer.adapters.download as download
    from deployer.adapters.local_files import sha256_file as real

    hashed: list[str] = []

    def counting(path: Path, *args: Any, **kwargs: Any) -> str:
        hashed.append(str(path))
        return real(path, *args, **kwargs)

    placed = Path(hf_hub_download("test/tiny", "tiny-Q4_K_M.gguf", cache_dir=cache))
    monkeypatch.setattr(download, "sha256_file", counting)
    assert pull("hf://test/tiny")[0] == 0
    assert len(hashed) == 1  # a file placed by huggingface_hub: checked once
    assert pull("hf://test/tiny")[0] == 0
    assert len(hashed) == 1  # unchanged: remembered
    blob = placed.resolve()
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))  # same size, new content and mtime
    code, _, err = pull("hf://test/tiny")
    assert len(hashed) == 2 and code != 0 and "sha256" in err.lower()
