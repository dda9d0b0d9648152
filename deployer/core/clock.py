"""Time as core sees it: a monotonic reading and a pause, given by the caller so a poll loop or
a duration can be tested without waiting (deployer.adapters.clock is the real one)."""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    """A monotonic clock that can wait."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start; never goes back."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        ...
