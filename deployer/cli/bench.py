"""`deployer bench NAME|URL`: throughput and latency under load, measured at rising concurrency."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deployer.cli.app import app
from deployer.cli.errors import run_guarded
from deployer.cli.params import DetectOpt, JsonOpt, ProfileOpt, QuantOpt
from deployer.core.bench.policy import DEFAULT_MAX_TTFT_S, DEFAULT_MIN_STREAM_TOKENS_PER_S


@app.command()
def bench(
    target: Annotated[str, typer.Argument(help="Deployment name (deployer ps) or server URL.")],
    concurrency: Annotated[str | None, typer.Option(
        "--concurrency", help="Levels to run, e.g. 1,2,4 (default: 1, 2, 4, ... up to the server's slots).")] = None,
    max_concurrency: Annotated[int, typer.Option(
        "--max-concurrency", help="Top level when the server does not say its slots.", min=1, max=1024)] = 4,
    requests: Annotated[int, typer.Option("--requests", help="Requests per level (at least the level's streams).", min=1)] = 8,
    prompt_tokens: Annotated[int, typer.Option("--prompt-tokens", help="Synthetic prompt length (about, in tokens).")] = 128,
    output_tokens: Annotated[int, typer.Option("--output-tokens", help="Tokens each answer generates.")] = 64,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="JSONL file of your prompts: {\"messages\": [...]} or {\"prompt\": \"...\"} a line.")] = None,
    max_ttft_s: Annotated[float | None, typer.Option("--max-ttft-s", help="Target: TTFT p95 at most this (s).")] = DEFAULT_MAX_TTFT_S,
    min_stream_tps: Annotated[float | None, typer.Option("--min-stream-tokens-per-s", help="Target: median stream speed at least this.")] = DEFAULT_MIN_STREAM_TOKENS_PER_S,
    max_e2e_s: Annotated[float | None, typer.Option("--max-e2e-s", help="Target: end-to-end p95 at most this (s).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds one request may take.")] = 120.0,
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
