"""`deployer profiles` commands."""

from __future__ import annotations
