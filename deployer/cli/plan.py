"""`deployer plan`: what to run on this hardware, and why, before anything is downloaded."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from deployer.cli.app import app
from deployer.cli.errors import run_guarded
from deployer.cli.output import cells, console, echo, line, print_json, styled
from deployer.cli.params import DetectOpt, JsonOpt, LoadModeOpt, ProfileOpt
from deployer.core.units import fmt_bytes

if TYPE_CHECKING:  # the planner (pydantic, numpy) loads only when plan runs (fast --help)
    from deployer.core.fit.plan import PlanResult


@app.command()
def plan(
    model: Annotated[
        str, typer.Argument(help="Catalog id, demo, a .gguf path or hf://ORG/REPO[:QUANT].")
    ],
    profile: ProfileOpt = None,
    detect: DetectOpt = False,
    ctx: Annotated[int | None, typer.Option("--ctx", help="Context length (tokens).")] = None,
    parallel: Annotated[int, typer.Option("--parallel", help="Parallel slots.")] = 1,
    kv_type: Annotated[
        str, typer.Option("--kv-type", help="KV cache type: f16, q8_0, q4_0.")
    ] = "f16",
    quant: Annotated[str | None, typer.Option("--quant", help="Force a quantization.")] = None,
    backend: Annotated[str, typer.Option("--backend", help="llamacpp or ollama.")] = "llamacpp",
    load_mode: LoadModeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pick the best quant that fits, with its memory breakdown, speed and cost."""

    def body() -> None:
        from deployer.cli import wiring
        from deployer.core.model.ref import parse_model_ref

        wiring.check_backend(backend)
        prof = wiring.pick_profile(profile, detect)
        result = wiring.plan_for(
            parse_model_ref(model), prof, quant=quant, ctx=ctx, parallel=parallel, kv_type=kv_type,
            backend=backend, load_mode=load_mode, suggest_profiles=True,
        )  # fmt: skip
        if as_json:
            print_json(result.as_dict())
        else:
            show_plan(result)
        if not result.fits:
            raise typer.Exit(1)

    run_guarded(body)


def show_plan(result: PlanResult) -> None:
    """Human view of a plan."""
    d = result.as_dict()
    verdict = styled("fits", "green") if d["fits"] else styled("does not fit", "red")
    echo(
        styled(d["model"], "bold"), f" {d['quant']} on ", styled(d["profile"], "bold"),
        f" ({result.profile.name}): ", verdict,
    )  # fmt: skip
    offload = (
        "CPU only"
        if result.profile.kind == "cpu"
        else f"{d['n_gpu_layers']}/{d['n_layers_total']} layers on GPU"
    )
    echo(
        f"file {fmt_bytes(d['file_bytes'])} · ctx {d['ctx']} · {d['parallel']} slot(s) · "
        f"KV {d['kv_type']} · flash attention {'on' if d['flash_attention'] else 'off'} · {offload}"
    )
    echo(f"weights: {d['weights_summary']}")
    table = Table(title="memory", show_edge=False)
    for col in (
        "device",
        "weights",
        "KV cache",
        "compute",
        "output",
        "overhead",
        "total",
        "budget",
    ):
        table.add_column(col, justify="right" if col != "device" else "left")
    for dev in d["devices"]:
        ok = dev["total_bytes"] <= dev["budget_bytes"]
        table.add_row(
            *cells(
                dev["name"],
                *(
                    fmt_bytes(dev[k])
                    for k in (
                        "weights_bytes",
                        "kv_cache_bytes",
                        "compute_bytes",
                        "output_bytes",
                        "overhead_bytes",
                        "total_bytes",
                    )
                ),
            ),
            line(fmt_bytes(dev["budget_bytes"]), "" if ok else styled(" over", "red")),
        )
    console.print(table)
    speed = f"~{d['predicted_tokens_per_s']} tokens/s decode (one stream)"
    if d["cost_per_million_tokens_usd"] is not None:
        speed += (
            f" · ${d['price_per_hour_usd']}/h · "
            f"${d['cost_per_million_tokens_usd']} per 1M output tokens"
        )
    echo(speed)
    if d["license"]:
        lic = d["license"]
        echo(f"licence {lic['id']}: {lic['note']}")
    if d["alternatives"]:
        alt = Table(title="alternatives", show_edge=False)
        for col in ("quant", "ctx", "GPU layers", "fits", "reason"):
            alt.add_column(col)
        for a in d["alternatives"]:
            alt.add_row(
                *cells(
                    a["quant"],
                    a["ctx"],
                    "-" if a["n_gpu_layers"] < 0 else a["n_gpu_layers"],
                    "yes" if a["fits"] else "no",
                    a["reason"],
                )
            )
        console.print(alt)
    for text in d["assumptions"]:
        echo(styled(f"assumes: {text}", "dim"))
