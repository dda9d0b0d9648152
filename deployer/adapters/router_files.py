"""Files a router deployment keeps: its preset INI (under the state dir) and a models file read
bounded. The preset holds no secret: paths inside the container and llama-server arguments."""

from __future__ import annotations

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


class FilePresetStore:
    """Presets under the state dir, readable by the container's user (0644 in a 0755 folder)."""

    def write_preset(self, name: str, text: str) -> Path:
        """Write `name`'s preset atomically; its path."""
        folder = router_dir(name)
        folder.mkdir(parents=True, exist_ok=True, mode=0o755)
        return write_text_atomic(folder / PRESET_FILE, text, mode=0o644)

    def discard(self, name: str) -> None:
        """Remove `name`'s preset folder."""
        shutil.rmtree(router_dir(name), ignore_errors=True)


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
    gone = [p.name for p in sorted(root.iterdir()) if p.is_dir() and not has_record(p.name)]
    for name in gone:
        shutil.rmtree(root / name, ignore_errors=True)
    return gone
