"""`deployer plan`: what to run on this hardware, and why, before anything is downloaded."""

from __future__ import annotations

from typing import Annotated

import typer

from deployer.cli.app import app
from deployer.cli.errors import run_guarded
from deployer.cli.output import print_json
from deployer.cli.params import (
    BackendOpt,
    CtxOpt,
    DetectOpt,
    JsonOpt,
    KvTypeOpt,
    LoadModeOpt,
    LoraOpt,
    MaxLoadedOpt,
    ModelsArg,
    ModelsFileOpt,
    ParallelOpt,
    ProfileOpt,
    PromptCacheOpt,
    QuantOpt,
)

# Defaults repeated from deployer.core.fit.traffic (importing it here would load the planner for
# `--help`); tests/unit/test_plan_load.py keeps the two equal.
RequestsOpt = Annotated[
    float | None,
    typer.Option("--requests-per-day", help="Size slots, replicas and cost for this traffic."),
]
PromptOpt = Annotated[int, typer.Option("--prompt-tokens", help="Prompt tokens a request.")]
OutputOpt = Annotated[int, typer.Option("--output-tokens", help="Output tokens a request.")]
PeakOpt = Annotated[
    float, typer.Option("--peak-factor", help="Busiest hour's request rate over the average.")
]
TtftOpt = Annotated[float, typer.Option("--max-ttft-s", help="Longest time to first token.")]
StreamOpt = Annotated[
    float, typer.Option("--min-stream-tokens-per-s", help="Slowest output speed one user sees.")
]
ApiOpt = Annotated[
    list[str] | None, typer.Option("--api", help="API price row to compare (repeat; default all).")
]
NoCalOpt = Annotated[
    bool, typer.Option("--no-calibration", help="Ignore what deployer bench measured here.")
]


@app.command()
def plan(
    models: ModelsArg = None,
    profile: ProfileOpt = None,
    detect: DetectOpt = False,
    ctx: CtxOpt = None,
    parallel: ParallelOpt = 1,
    kv_type: KvTypeOpt = "f16",
    quant: QuantOpt = None,
    backend: BackendOpt = "llamacpp",
    load_mode: LoadModeOpt = None,
    prompt_cache: PromptCacheOpt = 0,
    requests_per_day: RequestsOpt = None,
    prompt_tokens: PromptOpt = 1000,
    output_tokens: OutputOpt = 300,
    peak_factor: PeakOpt = 3.0,
    max_ttft_s: TtftOpt = 3.0,
    min_stream_tokens_per_s: StreamOpt = 10.0,
    api: ApiOpt = None,
    no_calibration: NoCalOpt = False,
    lora: LoraOpt = None,
    as_json: JsonOpt = False,
    max_loaded: MaxLoadedOpt = None,
    models_file: ModelsFileOpt = None,
) -> None:
    """Pick the best quant that fits, with its memory, speed under load and cost."""
    if models_file is not None or len(models or []) != 1:
        from deployer.cli.plan_several import plan_several_cmd

        return plan_several_cmd(
            models or [], models_file, profile=profile, detect=detect, ctx=ctx, parallel=parallel,
            kv_type=kv_type, quant=quant, backend=backend, load_mode=load_mode,
            max_loaded=max_loaded, as_json=as_json, lora=lora, prompt_cache_mib=prompt_cache,
        )  # fmt: skip
    model = models[0] if models else ""

    def body() -> None:
        from deployer.cli import wiring
        from deployer.cli.plan_view import show_plan
        from deployer.core.fit.api_prices import load_prices, select_prices
        from deployer.core.fit.calibration import NoCalibrations
        from deployer.core.fit.multi import check_max_loaded
        from deployer.core.fit.traffic import TrafficRequest, plan_economics, plan_report
        from deployer.core.model.ref import parse_model_ref

        wiring.check_backend(backend)
        check_max_loaded(max_loaded, 1)  # one model: --max-loaded 2+ means nothing
        traffic = TrafficRequest(
            requests_per_day, prompt_tokens, output_tokens, peak_factor, max_ttft_s,
            min_stream_tokens_per_s,
        )  # fmt: skip
        traffic.check()
        prices = select_prices(load_prices(), api)
        prof = wiring.pick_profile(profile, detect)
        result = wiring.plan_for(
            parse_model_ref(model), prof, quant=quant, ctx=ctx, parallel=parallel, kv_type=kv_type,
            backend=backend, load_mode=load_mode, suggest_profiles=True,
            adapters=wiring.load_adapters(lora), prompt_cache_mib=prompt_cache,
        )  # fmt: skip
        store = NoCalibrations() if no_calibration else wiring.calibrations()
        economics = plan_economics(
            result, calibrations=store, traffic=traffic, prices=prices,
            today=wiring.clock().utc_now().date(),
        )  # fmt: skip
        economics.warnings[:0] = getattr(store, "warnings", [])
        report = plan_report(result, economics)
        if as_json:
            print_json(report)
        else:
            show_plan(result, report)
        if not result.fits:
            raise typer.Exit(1)

    run_guarded(body)
