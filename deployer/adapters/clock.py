"""The real clock core polls and measures with (deployer.core.clock.Clock)."""

from __future__ import annotations

import time


class SystemClock:
    """time.monotonic and time.sleep."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start; never goes back."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        time.sleep(seconds)
