"""Shared typer parameter aliases."""

from __future__ import annotations

from typing import Annotated

import typer

LoadModeOpt = Annotated[
    str | None,
    typer.Option(
        "--load-mode",
        help="How llama-server holds the weights: mmap (default), none, mlock, mmap+mlock, dio. "
        "The plan budgets memory for it.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", "-p", help="Hardware profile id (deployer profiles list)."),
]
DetectOpt = Annotated[
    bool, typer.Option("--detect", help="Use the detected hardware of this machine.")
]
