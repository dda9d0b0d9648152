"""A Hub listing's values, as huggingface_hub hands them over: exact form, or one line.

The entries are huggingface_hub's own RepoSibling/BlobLfsInfo objects (what model_info returns),
filled with arbitrary values; whatever listed_files accepts must make paths inside the cache
when the real store builds them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub.hf_api import BlobLfsInfo, RepoSibling
from hypothesis import given
from hypothesis import strategies as st

from deployer.adapters.download import HfCacheStore
from deployer.adapters.http_range import range_total
from deployer.adapters.hub import listed_files
from deployer.core.errors import UnsafeRepoPath
from deployer.core.pull.files import FileTarget
from deployer.core.pull.hub_checks import MAX_FILE_BYTES
from deployer.core.untrusted import UntrustedValue

REPO = "org/repo"
SHA = "ab" * 32
COMMIT = "c" * 40
HEX = "0123456789abcdef"

names = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="ab./\\-_{}%#\n\x00 Q4.gguf", max_size=30),
    st.sampled_from(["m-Q4_K_M.gguf", "Q4/m-00001-of-00002.gguf", "../x", "/abs", "C:x", "a//b"]),
    st.builds(lambda a, b: f"{a}/{b}", st.sampled_from(["..", ".", "", "d"]), st.text(max_size=8)),
)
shas = st.one_of(
    st.text(alphabet=HEX, min_size=64, max_size=64),
    st.text(max_size=70),
    st.text(alphabet=HEX + "ABCDEF./", min_size=62, max_size=66),
    st.sampled_from(["../../../../tmp/victim/important.txt", "/tmp/victim", SHA + "/.."]),
    st.none(),
    st.integers(),
)
sizes = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([0, 1, MAX_FILE_BYTES, MAX_FILE_BYTES + 1, -1, True, False]),
    st.text(max_size=5),
    st.floats(),
    st.none(),
)
blob_ids = st.one_of(
    st.none(), st.text(alphabet=HEX, min_size=40, max_size=40), st.text(max_size=42)
)


@st.composite
def siblings(draw: st.DrawFn) -> RepoSibling:
    size = draw(sizes)
    lfs = None
    if draw(st.booleans()):
        lfs_size = size if draw(st.booleans()) else draw(sizes)
        lfs = BlobLfsInfo(size=lfs_size, sha256=draw(shas), pointer_size=134)  # type: ignore[arg-type]
    return RepoSibling(rfilename=draw(names), size=size, blob_id=draw(blob_ids), lfs=lfs)  # type: ignore[arg-type]


@given(st.lists(siblings(), max_size=4))
def test_listing_is_exact_or_refused_and_paths_stay_inside(entries: list[RepoSibling]) -> None:
    try:
        files = listed_files(REPO, entries)
    except UntrustedValue as exc:
        message = exc.message()
        assert message.startswith(f"Hub listing of {REPO}: ")
        assert "\n" not in message and "\r" not in message and "\x00" not in message
        assert "HF_ENDPOINT" in message  # the next step
        return
    assert len({f.name for f in files}) == len(files)
    root = Path("/nonexistent-cache/hub")
    store = HfCacheStore(cache_dir=root)
    for f in files:
        assert type(f.size) is int and 0 <= f.size <= MAX_FILE_BYTES
        assert f.sha256 is None or re.fullmatch("[0-9a-f]{64}", f.sha256)
        if f.sha256 is None:
            continue
        for local_dir in (None, Path("/nonexistent-models")):
            target = FileTarget(REPO, COMMIT, "main", f.name, f.size, f.sha256, local_dir)
            for path in store._paths(target):
                assert path.is_relative_to(local_dir or root), path


def test_a_real_listing_entry_passes() -> None:
    sib = RepoSibling(
        rfilename="Q4_K_M/m-Q4_K_M-00001-of-00002.gguf",
        size=10,
        blob_id="0" * 40,
        lfs=BlobLfsInfo(size=10, sha256=SHA, pointer_size=134),
    )
    readme = RepoSibling(rfilename="README.md", size=5, blob_id="1" * 40)
    files = listed_files(REPO, [sib, readme])
    assert [(f.name, f.size, f.sha256) for f in files] == [
        ("Q4_K_M/m-Q4_K_M-00001-of-00002.gguf", 10, SHA),
        ("README.md", 5, None),
    ]


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("sha256", "../../../../tmp/victim/important.txt", "sha256 of 'm.gguf'"),
        ("sha256", "/tmp/victim/important.txt", "64 lowercase hex"),
        ("rfilename", "m{{ lookup('pipe','id > PWNED') }}-Q4_K_M.gguf", "template syntax"),
        ("rfilename", "m\n-Q4_K_M.gguf", "control character"),
        ("rfilename", "../m.gguf", "'..'"),
        ("size", -1, "size of 'm.gguf'"),
        ("size", "10", "whole number"),
        ("blob_id", "../x", "blob id"),
    ],
)
def test_each_bad_value_names_repo_file_and_next_step(field: str, value: Any, says: str) -> None:
    values: dict[str, Any] = {"rfilename": "m.gguf", "size": 10, "blob_id": "0" * 40}
    lfs: dict[str, Any] = {"size": 10, "sha256": SHA, "pointer_size": 134}
    (lfs if field == "sha256" else values)[field] = value
    if field == "size":
        lfs["size"] = value
    sib = RepoSibling(**values, lfs=BlobLfsInfo(**lfs))
    with pytest.raises(UntrustedValue) as info:
        listed_files(REPO, [sib])
    message = info.value.message()
    assert message.startswith(f"Hub listing of {REPO}: ") and says in message
    assert "HF_ENDPOINT" in message


def test_store_refuses_escaping_values_where_it_builds_paths(tmp_path: Path) -> None:
    """The defensive check at the path-building site: values that skipped the listing check."""
    store = HfCacheStore(cache_dir=tmp_path / "hub")
    good = FileTarget(REPO, COMMIT, "main", "m.gguf", 1, SHA)
    for bad in (
        good.__class__(REPO, COMMIT, "main", "m.gguf", 1, "../../../../victim/important.txt"),
        good.__class__(REPO, COMMIT, "main", "m.gguf", 1, str(tmp_path / "victim")),
        good.__class__(REPO, "../../victim", "main", "m.gguf", 1, SHA),
        good.__class__("../..", COMMIT, "main", "m.gguf", 1, SHA),
    ):
        with pytest.raises(UntrustedValue):
            store._paths(bad)
    with pytest.raises(UnsafeRepoPath):
        store._paths(good.__class__(REPO, COMMIT, "main", "../../m.gguf", 1, SHA))
    assert all(p.is_relative_to(tmp_path / "hub") for p in store._paths(good))


def test_offline_revision_and_cached_ref_are_checked(tmp_path: Path) -> None:
    store = HfCacheStore(cache_dir=tmp_path / "hub")
    with pytest.raises(UntrustedValue):
        store.cached_listing(REPO, "../../../victim")
    ref = tmp_path / "hub" / "models--org--repo" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text("../../../../victim")  # a hostile X-Repo-Commit that huggingface_hub stored
    with pytest.raises(UntrustedValue) as info:
        store.cached_listing(REPO, None)
    assert str(ref) in info.value.message()
    ref.write_text(COMMIT)
    snapshot = ref.parent.parent / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "m{{ x }}-Q4_K_M.gguf").write_bytes(b"GGUF")  # a name some other tool placed
    with pytest.raises(UntrustedValue, match="template syntax"):
        store.cached_listing(REPO, None)


@pytest.mark.parametrize(
    ("header", "total"),
    [("bytes 0-9/100", 100), ("bytes */100", 100), ("bytes 0-9/*", None), (None, None),
     ("bytes 0-9/-5", None), ("bytes 0-9/" + "9" * 30, None), ("garbage", None)],
)  # fmt: skip
def test_content_range_total(header: str | None, total: int | None) -> None:
    assert range_total(header) == total
