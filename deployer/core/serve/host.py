"""What deploy asks of the machine it runs on, beyond its files: the CPU count a container's
process cap is sized for, and a fresh random label for one deploy attempt
(deployer.adapters.host is the real one)."""

from __future__ import annotations

from typing import Protocol


class DeployHost(Protocol):
    """The local machine, as deploy needs it."""

    def cpu_count(self) -> int | None:
        """Logical CPUs here (None when unknown)."""
        ...

    def attempt_id(self) -> str:
        """A new random value, never repeated, naming one deploy attempt."""
        ...
