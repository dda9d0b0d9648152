"""Map errors to one line and an exit code; tracebacks only with DEPLOYER_DEBUG=1."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
import typer.core

from deployer.core.errors import DeployerError
from deployer.core.untrusted import printable

T = TypeVar("T")

# typer 0.28 vendors click as typer._click; older typers use click itself. Usage errors are
# that module's UsageError; NoArgsIsHelpError (click >= 8.2) is one too, and it prints help.
_click: Any = getattr(typer.core, "_click", None) or importlib.import_module("click")
_USAGE_ERROR: type[Exception] = _click.exceptions.UsageError
_PRINTS_HELP: tuple[type[Exception], ...] = tuple(
    c for c in (getattr(_click.exceptions, "NoArgsIsHelpError", None),) if c is not None
)


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


@contextmanager
def usage_in_one_line() -> Iterator[None]:
    """Turn a usage error into one line naming the problem and the help to read, exit 2."""
    try:
        yield
    except _USAGE_ERROR as exc:
        if isinstance(exc, _PRINTS_HELP):
            raise
        err: Any = exc
        where = f" Try '{err.ctx.command_path} --help'." if err.ctx is not None else ""
        message = " ".join(str(err.format_message()).split()).rstrip(".")
        print(f"error: {printable(message)}.{where}", file=sys.stderr)
        raise typer.Exit(2) from None
