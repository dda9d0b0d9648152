"""The files `deployer bench` reads and writes: an API key file and a prompts file (bounded,
regular files only), and the shareable report."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from deployer.adapters.key_files import KeyFileProblem, key_file_message, read_key_file
from deployer.adapters.statefile import write_text_atomic
from deployer.core.bench.shapes import MAX_PROMPTS_FILE_BYTES
from deployer.core.errors import InvalidRequest


def _regular(path: Path, flag: str, max_bytes: int) -> None:
    try:
        info = os.stat(path)
    except OSError as exc:
        raise InvalidRequest(f"{flag} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidRequest(f"{flag} {path} is not a regular file")
    if info.st_size > max_bytes:
        raise InvalidRequest(f"{flag} {path} is larger than {max_bytes} bytes")


def read_api_key(path: Path, flag: str = "--api-key-file") -> str:
    """The key in `path` (adapters/key_files.py: bounded, a regular file, one key); the key
    itself is never shown."""
    try:
        return read_key_file(path)
    except KeyFileProblem as exc:
        raise InvalidRequest(key_file_message(flag, exc)) from None


def read_prompts(path: Path) -> str:
    """The UTF-8 text of a prompts file (core/bench/shapes.py parses it)."""
    _regular(path, "--prompts", MAX_PROMPTS_FILE_BYTES)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PROMPTS_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidRequest(f"--prompts {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_PROMPTS_FILE_BYTES:
        raise InvalidRequest(f"--prompts {path} is larger than {MAX_PROMPTS_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(f"--prompts {path} is not UTF-8 text") from None


def write_report(path: Path, text: str) -> Path:
    """Write the report atomically; never over anything but a regular file."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise InvalidRequest(f"--report {path} exists and is not a regular file")
    try:
        write_text_atomic(path, text, mode=0o644)
    except OSError as exc:
        raise InvalidRequest(f"--report {path} cannot be written ({exc.strerror or exc})") from None
    return path
