"""Map errors to one line and an exit code; tracebacks only with DEPLOYER_DEBUG=1."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

from deployer.core.errors import DeployerError
from deployer.core.untrusted import printable

T = TypeVar("T")


def debug_enabled() -> bool:
    """Whether the user asked for tracebacks."""
    return os.environ.get("DEPLOYER_DEBUG", "") not in ("", "0")


def run_guarded(func: Callable[[], T]) -> T:
    """Run `func`; turn DeployerError into `error: ...` on stderr and its exit code."""
    try:
        return func()
    except DeployerError as exc:
        if debug_enabled():
            raise
        # Messages quote data (names, paths, Hub file names): one line, no raw controls.
        print(f"error: {printable(exc.message())}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        if debug_enabled():
            raise
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
