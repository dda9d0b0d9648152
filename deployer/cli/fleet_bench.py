"""`deployer fleet bench`: bench's sweep on every fleet host through an SSH tunnel, summed."""

from __future__ import annotations

import typer

from deployer.cli.errors import run_guarded
from deployer.cli.fleet import fleet_app
from deployer.cli.params import (
    ConcurrencyOpt,
    FleetImageOpt,
    ForksOpt,
    InventoryOpt,
    JsonOpt,
    MaxConcurrencyOpt,
    MaxE2eOpt,
    MaxTtftOpt,
    MinStreamTpsOpt,
    OutputTokensOpt,
    PromptsOpt,
    PromptTokensOpt,
    RequestsOpt,
    RequestTimeoutOpt,
)
from deployer.core.bench.policy import DEFAULT_MAX_TTFT_S, DEFAULT_MIN_STREAM_TOKENS_PER_S


@fleet_app.command("bench")
def fleet_bench(
    inventory: InventoryOpt,
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
    forks: ForksOpt = 5,
    image: FleetImageOpt = None,
    json_out: JsonOpt = False,
) -> None:  # fmt: skip
    """Measure each host's throughput under load through an SSH tunnel; sum the fleet's capacity."""

    def body() -> None:
        from deployer.cli import bench_setup, wiring
        from deployer.cli.fleet_bench_view import on_host, on_start, show
        from deployer.cli.output import err_console
        from deployer.core.bench.policy import LatencyTarget, default_levels, parse_levels
        from deployer.core.fleet_bench.flow import FleetBenchOptions, bench_inventory

        bench_setup.check_flags(requests, timeout, None)
        default_levels(max_concurrency)
        options = FleetBenchOptions(
            levels=parse_levels(concurrency) if concurrency is not None else None,
            max_concurrency=max_concurrency, requests=requests,
            shape=bench_setup.request_shape(prompts, prompt_tokens, output_tokens),
            goal=LatencyTarget(max_ttft_s, min_stream_tps, max_e2e_s), timeout_s=timeout,
        )  # fmt: skip
        result = bench_inventory(
            inventory, options, wiring.fleet_link(), wiring.fleet_edges(err_console.print),
            forks=forks, image=image, on_host=None if json_out else on_host,
            on_start=None if json_out else on_start,
        )  # fmt: skip
        show(result.as_dict(str(inventory)), as_json=json_out)
        if result.interrupted:
            raise KeyboardInterrupt
        if not result.ok:
            raise typer.Exit(1)

    run_guarded(body)
