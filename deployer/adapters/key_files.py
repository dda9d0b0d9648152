"""The one way an API key file is read: bounded, regular files only, one key checked.

Every reader of a key file (deploy's own keys, `bench --api-key-file`, eval's `key-file=`, a
router's status query, fleet bench on the local host) goes through `read_key_file`, so they all
share the same rules: the file is opened without blocking (a FIFO or a device named as the key
file is refused at once, never waited on), must be a regular file, at most MAX_KEY_FILE_BYTES,
and must hold one key: visible ASCII, no spaces, one line. Callers turn a KeyFileProblem into
their own one-line message; the key itself is never part of any message.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_KEY_FILE_BYTES = 8192


class KeyFileProblem(Exception):
    """Why a key file was not read; `problem` is a short phrase that never quotes the file.
    `missing`: there is no such file; `content`: the file was read but does not hold one key
    (too large, or not one token of visible ASCII)."""

    def __init__(
        self, path: Path, problem: str, *, missing: bool = False, content: bool = False
    ) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
        self.missing = missing
        self.content = content


def is_one_key(value: str) -> bool:
    """Whether `value` can go in an HTTP header as one token: visible ASCII only, bounded.
    Anything else would fail deep in an HTTP library with the key quoted in its message."""
    return 0 < len(value) <= MAX_KEY_FILE_BYTES and all("!" <= c <= "~" for c in value)


def read_key_file(path: Path) -> str:
    """The key held in `path`, or KeyFileProblem saying why not."""
    try:
        # O_NONBLOCK: opening a FIFO for reading must not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError as exc:
        raise KeyFileProblem(path, exc.strerror or "no such file", missing=True) from None
    except OSError as exc:
        raise KeyFileProblem(path, exc.strerror or "cannot be opened") from None
    except ValueError:  # a NUL byte in the path (a targets file's key-file= can hold one)
        raise KeyFileProblem(path, "is not a usable path (it holds a NUL byte)") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileProblem(path, "is not a regular file")
        raw = os.read(fd, MAX_KEY_FILE_BYTES + 2)  # a key and its newline, and one byte more
    except OSError as exc:
        raise KeyFileProblem(path, exc.strerror or "cannot be read") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_KEY_FILE_BYTES + 1:
        raise KeyFileProblem(path, f"is larger than {MAX_KEY_FILE_BYTES} bytes", content=True)
    try:
        value = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        value = ""
    if not is_one_key(value):
        raise KeyFileProblem(path, "does not hold one key on one line", content=True)
    return value


def key_file_message(what: str, exc: KeyFileProblem) -> str:
    """One line naming the file as the caller calls it: '--api-key-file /x is not a regular
    file', 'key file /x: no such file'."""
    if exc.problem.startswith(("is ", "does ")):
        return f"{what} {exc.path} {exc.problem}"
    return f"{what} {exc.path}: {exc.problem}"
