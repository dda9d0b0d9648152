"""`deployer detect` commands."""

from __future__ import annotations
