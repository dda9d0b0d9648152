"""Files a router deployment keeps: its preset INI (under the state dir) and a models file read
bounded. The preset holds no secret: paths inside the container and llama-server arguments."""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from deployer.adapters.data_files import state_dir
from deployer.adapters.statefile import write_text_atomic
from deployer.core.errors import InvalidRequest
from deployer.core.serve.router import MODELS_FILE_MAX_BYTES, PRESET_FILE


def router_dir(name: str) -> Path:
    """Where deployment `name`'s preset lives."""
    return state_dir() / "routers" / name


# A deploy holds an exclusive lock on this file in its preset folder from the preset's write
# until the process ends (its record is written by then, or the folder removed), so `down`'s
# pruning of presets without a record leaves a deploy in progress alone, and a second deploy
# of the same name cannot overwrite the first one's preset.
_LOCK_FILE = ".deploying"
_HELD: dict[str, int] = {}  # name -> the open, locked file of a deploy in this process


def _try_lock(path: Path) -> int | None:
    """An open fd holding an exclusive lock on `path` (created), or None when another
    process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class FilePresetStore:
    """Presets under the state dir, readable by the container's user (0644 in a 0755 folder)."""

    def write_preset(self, name: str, text: str) -> Path:
        """Write `name`'s preset atomically; its path. InvalidRequest when another deploy of
        `name` is writing or starting one."""
        folder = router_dir(name)
        folder.mkdir(parents=True, exist_ok=True, mode=0o755)
        if name not in _HELD:
            fd = _try_lock(folder / _LOCK_FILE)
            if fd is None:
                raise InvalidRequest(
                    f"a deploy of '{name}' is in progress", "Wait for it, or pick another --name."
                )
            _HELD[name] = fd
        return write_text_atomic(folder / PRESET_FILE, text, mode=0o644)

    def release(self, name: str) -> None:
        """`name`'s deploy is recorded: let go of its lock (its preset stays)."""
        fd = _HELD.pop(name, None)
        if fd is not None:
            os.close(fd)

    def discard(self, name: str) -> None:
        """Remove `name`'s preset folder (and let go of its lock)."""
        shutil.rmtree(router_dir(name), ignore_errors=True)
        self.release(name)


def read_models_file(path: Path) -> str:
    """A models file's text, at most MODELS_FILE_MAX_BYTES, as UTF-8; one-line errors."""
    try:
        # O_NONBLOCK: a FIFO or a device named as the file must not hang the command
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidRequest(
            f"cannot read --models-file {path}: {exc.strerror or type(exc).__name__}",
            "Pass a readable YAML file.",
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InvalidRequest(
            f"--models-file {path} is not a regular file", "Pass a readable YAML file."
        )
    with os.fdopen(fd, "rb") as f:
        data = f.read(MODELS_FILE_MAX_BYTES + 1)
    if len(data) > MODELS_FILE_MAX_BYTES:
        raise InvalidRequest(
            f"--models-file {path} is larger than {MODELS_FILE_MAX_BYTES} bytes",
            "A models file lists at most 8 models.",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(f"--models-file {path} is not UTF-8 text") from None


def prune_presets(has_record: Callable[[str], bool]) -> list[str]:
    """Remove the preset folders of deployments that have no record any more; their names."""
    root = state_dir() / "routers"
    if not root.is_dir():
        return []
    gone: list[str] = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.is_symlink() or has_record(folder.name):
            continue
        try:
            fd = _try_lock(folder / _LOCK_FILE) if folder.name not in _HELD else None
        except OSError:
            continue  # not ours to judge (unwritable, a link): left alone
        if fd is None:
            continue  # a deploy of it is in progress (its record comes last)
        try:
            if not has_record(folder.name):  # asked again under the lock
                shutil.rmtree(folder, ignore_errors=True)
                gone.append(folder.name)
        finally:
            os.close(fd)
    return gone
