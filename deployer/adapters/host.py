"""The local machine as deploy sees it (deployer.core.serve.host.DeployHost)."""

from __future__ import annotations

import os
import secrets


class LocalHost:
    """os.cpu_count and a random 64-bit token."""

    def cpu_count(self) -> int | None:
        """Logical CPUs here (None when unknown)."""
        return os.cpu_count()

    def attempt_id(self) -> str:
        """16 random hex digits."""
        return secrets.token_hex(8)
