"""`deployer pull`: download a model's files, verified and resumable, into the Hugging Face cache."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from deployer.cli.app import app
from deployer.cli.errors import run_guarded
from deployer.cli.output import err_console, print_json
from deployer.cli.params import JsonOpt
from deployer.cli.pull_view import LineProgress, RichProgress, show_result

if TYPE_CHECKING:  # the pull machinery (gguf, numpy, the Hub) loads only when a pull runs
    from deployer.core.pull.files import ProgressSink

_TRUE = {"1", "true", "yes", "on"}


def offline_mode() -> bool:
    """HF_HUB_OFFLINE, read now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


@app.command()
def pull(
    model: Annotated[
        str,
        typer.Argument(help="Catalog id, demo, a .gguf path or hf://ORG/REPO[:QUANT][@REV]."),
    ],
    quant: Annotated[str | None, typer.Option("--quant", help="Quantization, e.g. Q4_K_M.")] = None,
    revision: Annotated[
        str | None, typer.Option("--revision", help="Branch, tag or commit (default main).")
    ] = None,
    local_dir: Annotated[
        Path | None,
        typer.Option("--local-dir", help="Put the files here instead of the Hugging Face cache."),
    ] = None,
    accept_license: Annotated[
        bool, typer.Option("--accept-license", help="Accept a licence that restricts use.")
    ] = False,
    connections: Annotated[
        int | None,
        typer.Option(
            "--connections",
            min=1,
            max=16,
            help="Parallel connections per file (default: 1 with <= 2 CPUs or under 64 MiB, "
            "else up to 4).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Download a model's GGUF files, resumable and sha256-verified."""

    def body() -> None:
        progress: RichProgress | LineProgress = (
            RichProgress() if err_console.is_terminal else LineProgress()
        )
        from deployer.cli.wiring import clock, hub_store, local_files
        from deployer.core.model.ref import parse_model_ref
        from deployer.core.pull.files import pull_model

        sink: ProgressSink = progress
        try:
            result = pull_model(
                parse_model_ref(model),
                quant,
                store=hub_store(connections),
                revision=revision,
                local_dir=local_dir,
                accept_license=accept_license,
                offline=offline_mode(),
                progress=sink,
                files=local_files(),
                clock=clock(),
            )
        finally:
            progress.close()
        if as_json:
            print_json(result.as_dict())
        else:
            show_result(result)

    run_guarded(body)
