"""`deployer plan` commands."""

from __future__ import annotations
