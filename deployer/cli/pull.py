"""`deployer pull` command."""

from __future__ import annotations
