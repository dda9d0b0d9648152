"""`deployer top NAME`: a deployment's live throughput, queue and KV cache use."""

from __future__ import annotations

from typing import Annotated

import typer

from deployer.cli.app import app
from deployer.cli.errors import run_guarded
from deployer.cli.params import JsonOpt

NameArg = Annotated[str, typer.Argument(help="Deployment name (deployer ps).")]


@app.command()
def top(
    name: NameArg,
    once: Annotated[
        bool, typer.Option("--once", help="Print one frame (two samples) and exit.")
    ] = False,
    json_out: JsonOpt = False,
    interval: Annotated[
        float, typer.Option("--interval", help="Seconds between samples (rates span it).")
    ] = 2.0,
) -> None:
    """Live tokens/s, queue and KV cache use of a deployment, from its Prometheus metrics."""

    def go() -> None:
        from deployer.cli import wiring
        from deployer.cli.top_view import print_frame_json, print_frame_once, show_live
        from deployer.core.serve.metrics import check_interval, watch

        check_interval(interval)
        endpoint, source = wiring.metrics_source(name)
        frames = watch(
            name, endpoint, source, wiring.clock(), interval_s=interval, frames=1 if once else None
        )
        try:
            if json_out:
                for f in frames:
                    print_frame_json(f)
            elif once:
                for f in frames:
                    print_frame_once(f)
            else:
                show_live(name, interval, frames)
        except KeyboardInterrupt:
            return  # Ctrl-C is how a live `top` ends: exit 0

    run_guarded(go)
