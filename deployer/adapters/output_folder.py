"""The folder `deployer render` writes into: what it may replace, and how it writes.

A file of the same name is replaced only when deployer rendered it (it carries RENDERED_MARK
near its top); a foreign file, a link or a folder in its place stops the render before anything
is written. Other files in the folder are left alone. Each file goes to a fresh temporary name
and is renamed into place.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from deployer.core.errors import DeployerError

# Every rendered file says so near its top; `write` replaces only files that do.
RENDERED_MARK = "Rendered by deployer"
_MARK_WITHIN_BYTES = 16384


@dataclass
class CannotWrite(DeployerError):
    """An output file that cannot be written, or that render will not replace."""

    path: str
    reason: str
    hint: str = "Choose another --out."
    exit_code: int = 1

    def message(self) -> str:
        return f"cannot write {self.path}: {self.reason}. {self.hint}"


def _check_replaceable(path: Path) -> None:
    """Refuse to replace anything but a regular file that deployer rendered."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_file():
        raise CannotWrite(str(path), "it exists and is not a regular file")
    try:
        with path.open("rb") as fh:
            head = fh.read(_MARK_WITHIN_BYTES)
    except OSError as exc:
        raise CannotWrite(str(path), exc.strerror or str(exc)) from exc
    if RENDERED_MARK.encode() not in head:
        raise CannotWrite(
            str(path),
            "it exists and was not rendered by deployer, so it is not replaced",
            "Move it away, or choose another --out.",
        )


def write_files(out: Path, files: dict[str, str]) -> list[Path]:
    """Write `files` (relative path -> text) under `out`, scripts executable; the paths written."""
    for rel in files:
        _check_replaceable(out / rel)
    written = []
    for rel, text in files.items():
        path = out / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # mkstemp: a fresh name opened O_EXCL, never a file or link planted there.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, 0o755 if rel.endswith(".sh") else 0o644)
            os.replace(tmp, path)
        except OSError as exc:
            raise CannotWrite(str(path), exc.strerror or str(exc)) from exc
        written.append(path)
    return written
