"""The `deployer` command: one typer app, a module per command group."""

from __future__ import annotations

from typing import Annotated

import typer

from deployer import __version__
from deployer.cli.errors import run_guarded

app = typer.Typer(
    name="deployer",
    help="Self-host open-weight LLMs: plan the fit, pull, render and deploy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"deployer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Self-host open-weight LLMs with one command."""


def _register() -> None:
    # Each command module adds itself to `app`; imports stay cheap (SDKs load lazily).
    from deployer.cli import (  # noqa: F401
        deploy,
        detect,
        fleet,
        image,
        models,
        plan,
        profiles,
        pull,
        render,
        runtime,
    )


_register()


def main() -> None:
    """Console-script entry point."""
    run_guarded(lambda: app(standalone_mode=True))
