"""The real clock core polls and measures with (deployer.core.clock.Clock)."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class SystemClock:
    """time.monotonic, time.sleep and datetime.now(UTC)."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start; never goes back."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        time.sleep(seconds)

    def utc_now(self) -> datetime:
        """datetime.now in UTC."""
        return datetime.now(UTC)
