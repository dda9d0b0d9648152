"""`deployer bench NAME|URL`: throughput and latency under load, measured at rising concurrency."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deployer.cli.app import app
from deployer.cli.errors import run_guarded
from deployer.cli.params import (
    ConcurrencyOpt,
    DetectOpt,
    JsonOpt,
    MaxConcurrencyOpt,
    MaxE2eOpt,
    MaxTtftOpt,
    MinStreamTpsOpt,
    OutputTokensOpt,
    ProfileOpt,
    PromptsOpt,
    PromptTokensOpt,
    QuantOpt,
    RequestsOpt,
    RequestTimeoutOpt,
)
from deployer.core.bench.policy import DEFAULT_MAX_TTFT_S, DEFAULT_MIN_STREAM_TOKENS_PER_S


@app.command()
def bench(
    target: Annotated[str, typer.Argument(help="Deployment name (deployer ps) or server URL.")],
    concurrency: ConcurrencyOpt = None,
    max_concurrency: MaxConcurrencyOpt = 4,
    requests: RequestsOpt = 8,
    prompt_tokens: PromptTokensOpt = 128,
    output_tokens: OutputTokensOpt = 64,
    prompts: PromptsOpt = None,
    max_ttft_s: MaxTtftOpt = DEFAULT_MAX_TTFT_S,
    min_stream_tps: MinStreamTpsOpt = DEFAULT_MIN_STREAM_TOKENS_PER_S,
    max_e2e_s: MaxE2eOpt = None,
    timeout: RequestTimeoutOpt = 120.0,
    api_key_file: Annotated[Path | None, typer.Option("--api-key-file", help="File holding the server's API key (default: the deployment's).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="A URL's model (catalog id, .gguf, hf://), for predictions.")] = None,
    quant: QuantOpt = None,
    profile: ProfileOpt = None,
    detect: DetectOpt = False,
    report: Annotated[Path | None, typer.Option("--report", help="Write a shareable report (.html or .svg).")] = None,
    no_save: Annotated[bool, typer.Option("--no-save", help="Keep nothing: no record update, no calibration.")] = False,
    json_out: JsonOpt = False,
) -> None:  # fmt: skip
    """Measure throughput and latency under load at rising concurrency; predicted beside measured."""

    def go() -> None:
        from deployer.cli import bench_setup, bench_view, wiring
        from deployer.core.bench.policy import LatencyTarget
        from deployer.core.bench.run import BenchOptions, run_bench

        bench_setup.check_flags(requests, timeout, report)
        shape = bench_setup.request_shape(prompts, prompt_tokens, output_tokens)
        goal = LatencyTarget(max_ttft_s, min_stream_tps, max_e2e_s)
        prep = bench_setup.prepare_target(
            target, api_key_file=api_key_file, concurrency=concurrency,
            max_concurrency=max_concurrency, model=model, quant=quant, profile_id=profile,
            detect=detect,
        )  # fmt: skip
        predictor = bench_setup.predictor_for(prep, shape.prompt_tokens, shape.output_tokens)
        live = bench_view.Live(prep, requests, quiet=json_out)
        options = BenchOptions(prep.levels, requests, shape, goal, timeout, save=not no_save)
        try:
            outcome = run_bench(
                prep.target, options, bench_setup.runner(prep, timeout, live.on_request),
                predictor=predictor, records=wiring.record_store(),
                calibrations=bench_setup.calibrations(), clock=wiring.clock(),
                on_level=live.on_level,
            )  # fmt: skip
        finally:
            live.stop()
        doc = {**outcome.result.as_dict(), "notes": prep.notes}
        if report is not None:
            bench_setup.write_report(report, doc)
        bench_view.show(doc, outcome, report, as_json=json_out)
        outcome.raise_if_failed()

    run_guarded(go)
