"""What `deployer pull` prints: progress per file (a bar, or lines for logs) and the result."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING

from deployer.cli.output import echo, err_console
from deployer.core.units import MIB, fmt_bytes
from deployer.core.untrusted import printable

if TYPE_CHECKING:
    from rich.progress import TaskID

    from deployer.core.pull.files import PullResult


class RichProgress:
    """A bar per file with bytes, speed and ETA (terminals)."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}", markup=False),  # a Hub file name: data
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=False,
        )
        self._task: TaskID | None = None

    def start_file(self, name: str, total_bytes: int, done_bytes: int) -> None:
        """Open a bar for this file."""
        if self._task is None:
            self._bar.start()
        self._task = self._bar.add_task(printable(name), total=total_bytes, completed=done_bytes)

    def advance(self, n_bytes: int) -> None:
        """Move the bar."""
        if self._task is not None:
            self._bar.advance(self._task, n_bytes)

    def end_file(self) -> None:
        """Leave the bar as it is."""

    def close(self) -> None:
        """Stop redrawing."""
        if self._task is not None:
            self._bar.stop()


class LineProgress:
    """One line per file start, then one about every 10 s (logs, CI, pipes)."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._lock = threading.Lock()
        self._name, self._total, self._done, self._started, self._last = "", 0, 0, 0.0, 0.0
        self._base = 0

    def start_file(self, name: str, total_bytes: int, done_bytes: int) -> None:
        """Say what starts and what is already there."""
        with self._lock:
            self._name, self._total, self._done = name, total_bytes, done_bytes
            self._base = done_bytes
            self._started = self._last = time.monotonic()
        have = f", {fmt_bytes(done_bytes)} already here" if done_bytes else ""
        print(
            f"pull: {printable(name)} ({fmt_bytes(total_bytes)}{have})", file=sys.stderr, flush=True
        )

    def advance(self, n_bytes: int) -> None:
        """Count; print a line when due."""
        with self._lock:
            self._done += n_bytes
            now = time.monotonic()
            if now - self._last < self.every_s:
                return
            self._last = now
            rate = (self._done - self._base) / max(now - self._started, 1e-6)
            line = (
                f"pull: {printable(self._name)} {self._done * 100 // max(self._total, 1)}% "
                f"{fmt_bytes(self._done)} of {fmt_bytes(self._total)} at {rate / MIB:.1f} MiB/s"
            )
        print(line, file=sys.stderr, flush=True)

    def end_file(self) -> None:
        """Nothing more to say per file."""

    def close(self) -> None:
        """Nothing to stop."""


def show_result(result: PullResult) -> None:
    """The files and what moved, for people."""
    for f in result.files:
        mark = "verified" if f.verified else "sha256 computed"
        echo(f"{f.path}  {fmt_bytes(f.bytes)}  sha256 {f.sha256} ({mark})")
    rev = f" at {result.revision}" if result.revision else ""
    echo(
        f"{result.model}{rev}: {fmt_bytes(result.bytes_downloaded)} downloaded, "
        f"{fmt_bytes(result.bytes_reused)} reused, {result.seconds:.1f} s"
    )
