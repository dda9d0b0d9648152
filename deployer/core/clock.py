"""Time as core sees it: a monotonic reading, a pause and the wall clock, given by the caller so
a poll loop, a duration or a record's time can be tested without waiting
(deployer.adapters.clock is the real one)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    """A monotonic clock that can wait."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start; never goes back."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        ...

    def utc_now(self) -> datetime:
        """The wall clock, timezone-aware UTC (for a record's created_at, an uptime)."""
        ...
