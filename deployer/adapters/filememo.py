"""Remember what was derived from files, until any of those files changes.

A memo entry is keyed by the identity of its source files (resolved path, size, mtime in ns,
inode, device) plus deployer's version and a caller's salt, and holds plain JSON. Uses:

- the validated hardware profiles, so `deployer profiles list` reads one JSON file instead of
  importing pydantic and YAML and validating every profile (the YAML is validated again the
  moment a profile file is added, removed or edited);
- the facts read from a GGUF header (a 262k-token vocabulary takes ~0.1 s to walk);
- "this file's sha256 was checked": the demo model's package re-hashes 253 MB on every call.

Entries live under the user cache dir (DEPLOYER_CACHE_DIR overrides it), are written atomically
and are only ever a shortcut: an unreadable, corrupt or unwritable memo is ignored and the work
is done again. Deleting the folder is always safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from deployer import __version__


def cache_dir() -> Path:
    """User cache dir for deployer; DEPLOYER_CACHE_DIR overrides it."""
    override = os.environ.get("DEPLOYER_CACHE_DIR")
    if override:
        return Path(override)
    from platformdirs import user_cache_path

    return user_cache_path("deployer")


def file_identity(paths: Iterable[Path], salt: str = "") -> str | None:
    """A string that changes when any of `paths` changes; None when one cannot be read."""
    parts = [f"deployer {__version__}", salt]
    try:
        for path in paths:
            real = os.path.realpath(path)
            st = os.stat(real)
            parts.append(f"{real}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{st.st_dev}")
    except OSError:
        return None
    return "\n".join(parts)


def _entry_path(namespace: str, identity: str) -> Path:
    digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
    return cache_dir() / "memo" / namespace / f"{digest}.json"


def recall(namespace: str, identity: str | None) -> Any | None:
    """The value stored for `identity`, or None (never stored, changed, unreadable)."""
    if identity is None:
        return None
    try:
        entry = json.loads(_read_bounded(_entry_path(namespace, identity)))
    except (OSError, ValueError, RecursionError):
        # unreadable, a planted link or device, too large, or JSON too deep: just a miss
        return None
    if not isinstance(entry, dict) or entry.get("identity") != identity:
        return None  # a digest collision or a hand-edited file: not ours
    return entry.get("value")


# Far above any entry deployer writes (the profiles' memo is tens of KiB, a header's facts less).
MAX_ENTRY_BYTES = 8 << 20


def _read_bounded(path: Path) -> str:
    """A memo entry's text: a regular file (no link followed, never a FIFO or a device) of at
    most MAX_ENTRY_BYTES; OSError or ValueError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_ENTRY_BYTES:
            raise ValueError(f"{path} is not a memo entry")
        return os.pread(fd, MAX_ENTRY_BYTES, 0).decode("utf-8")
    finally:
        os.close(fd)


# Entries kept per namespace; older ones (files since edited or gone) are pruned on write.
KEEP_PER_NAMESPACE = 256


def _prune(folder: Path) -> None:
    entries = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    for old in entries[: max(0, len(entries) - KEEP_PER_NAMESPACE)]:
        old.unlink(missing_ok=True)


def remember(namespace: str, identity: str | None, value: Any) -> None:
    """Store `value` (JSON-serialisable) for `identity`; silently skipped if it cannot be."""
    if identity is None:
        return
    path = _entry_path(namespace, identity)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _prune(path.parent)
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"identity": identity, "value": value}, fh)
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError):
        with contextlib.suppress(OSError):
            tmp.unlink()


def is_verified(path: Path, sha256: str) -> bool:
    """Whether this very file (same identity) was found to have `sha256` before."""
    return recall("verified", file_identity([path], salt=f"sha256 {sha256}")) is True


def remember_verified(path: Path, sha256: str) -> None:
    """Record that the file now at `path` hashes to `sha256`."""
    remember("verified", file_identity([path], salt=f"sha256 {sha256}"), True)
