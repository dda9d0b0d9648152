"""deployer: self-host open-weight LLMs with one command."""

from __future__ import annotations

__version__ = "0.1.0"
