"""Reading and writing deployer's own small JSON files (records, pid files, the ports memory).

Writes are atomic (temp file in the same folder, fsync, `os.replace`) with mode 0600. Reads
trust nothing: a state file may have been edited, truncated or replaced by anything, so a read
opens only a regular file (never a symlink, folder, FIFO or device: `/dev/zero` would never end),
reads at most a few KiB, and turns every way it can be wrong into one StateFileInvalid.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from deployer.core.errors import StateFileInvalid

MAX_STATE_BYTES = 64 * 1024  # a record is under 2 KiB; a bigger file is not one we wrote


def read_state_text(path: Path, *, max_bytes: int = MAX_STATE_BYTES) -> str:
    """The UTF-8 text of the regular file `path`; FileNotFoundError when absent."""
    where = str(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise  # an absent file is not an invalid one
    except OSError as exc:  # a state dir that is a file (ENOTDIR), unreadable, a name too long
        raise StateFileInvalid(where, f"cannot be read ({exc.strerror})") from None
    if stat.S_ISLNK(info.st_mode):
        raise StateFileInvalid(where, "is a symbolic link, not a file deployer wrote")
    if not stat.S_ISREG(info.st_mode):
        raise StateFileInvalid(where, "is not a regular file")
    try:
        # O_NOFOLLOW and O_NONBLOCK: swapped for a link or a FIFO since lstat, it still cannot
        # lead the read elsewhere or block.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateFileInvalid(where, "is a symbolic link, not a file deployer wrote") from None
        raise StateFileInvalid(where, f"cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise StateFileInvalid(where, "is not a regular file")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise StateFileInvalid(where, f"is larger than {max_bytes} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise StateFileInvalid(where, "is not UTF-8 text") from None


def read_state_json(path: Path, *, max_bytes: int = MAX_STATE_BYTES) -> Any:
    """The JSON value in `path` (bounded as read_state_text); FileNotFoundError when absent."""
    text = read_state_text(path, max_bytes=max_bytes)
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise StateFileInvalid(str(path), f"not JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise StateFileInvalid(str(path), "not JSON deployer wrote (nested too deeply)") from None
    except ValueError as exc:  # an integer of thousands of digits, NaN, Infinity
        raise StateFileInvalid(str(path), f"not JSON deployer wrote ({str(exc)[:80]})") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def write_text_atomic(path: Path, text: str, *, mode: int = 0o600) -> Path:
    """Write `text` to `path` through a fresh temp file beside it (mkstemp: O_EXCL, never a file
    or link planted there), fsync'd, given `mode`, then renamed over `path`; the path."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_state_json(path: Path, data: Any) -> Path:
    """Write `data` as JSON to `path` atomically, mode 0600, its folder 0700; the path."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")
