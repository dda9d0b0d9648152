"""What `deployer plan` prints: the verdict, memory, speed under load, traffic and the APIs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from deployer.cli.output import cells, console, echo, line, styled
from deployer.core.units import fmt_bytes
from deployer.core.untrusted import printable

if TYPE_CHECKING:
    from deployer.core.fit.plan import PlanResult


def show_plan(result: PlanResult, d: dict[str, Any]) -> None:
    """Human view of a plan; `d` is the `plan --json` report."""
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
    for a in d.get("adapters", []):
        echo(
            printable(
                f"LoRA adapter {a['ref']}: {a['arch']}, rank {a['rank']}, alpha {a['alpha']:g}, "
                f"scale {a['scale']:g}; {fmt_bytes(a['bytes'])} held beside its layers"
            ),
            soft_wrap=True,
        )
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
    if d.get("prompt_cache_mib"):
        echo(
            f"prompt cache: {fmt_bytes(d['prompt_cache_mib'] << 20)} of host memory for earlier "
            "conversations (llama-server --cache-ram), counted in the host total"
        )
    ckpt = d["devices"][-1].get("checkpoint_bytes", 0)
    if ckpt:
        from deployer.core.fit.memory import CTX_CHECKPOINTS

        echo(
            f"context checkpoints: {fmt_bytes(ckpt)} of host memory (llama-server "
            f"--ctx-checkpoints {CTX_CHECKPOINTS} a slot: sliding-window or recurrent state), "
            "counted in the host total"
        )
    speed = f"~{d['predicted_tokens_per_s']} tokens/s decode (one stream)"
    if d["cost_per_million_tokens_usd"] is not None:
        speed += (
            f" · ${d['price_per_hour_usd']}/h · "
            f"${d['cost_per_million_tokens_usd']} per 1M output tokens"
        )
    echo(speed)
    show_load(d)
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
    show_traffic(d)
    show_apis(d)
    for text in d["warnings"]:
        echo(styled(f"warning: {text}", "yellow"))
    for text in d["assumptions"]:
        echo(styled(f"assumes: {text}", "dim"))


def _money(x: float | None) -> str:
    if x is None:
        return "-"
    return f"${x:,.2f}" if x >= 1 else f"${x:.4g}"


def show_load(d: dict[str, Any]) -> None:
    """Throughput at the planned slots, and where its efficiencies come from."""
    ld = d["load"]
    bound = " (compute-bound)" if ld["compute_bound"] else ""
    text = (
        f"at {ld['slots']} slot(s), {ld['prompt_tokens']} + {ld['output_tokens']} tokens a "
        f"request: ~{ld['aggregate_tokens_per_s']} tokens/s in all{bound}, "
        f"{ld['per_stream_tokens_per_s']} per stream · prefill {ld['prefill_tokens_per_s']} "
        f"tokens/s · first token in {ld['ttft_s']} s"
    )
    if ld["cost_per_million_output_tokens_at_load_usd"] is not None:
        cost = _money(ld["cost_per_million_output_tokens_at_load_usd"])
        text += f" · {cost} per 1M output tokens at full load"
    echo(text)
    eff = ld["efficiency"]
    echo(
        styled(
            f"efficiency: {eff['memory']:.0%} of memory bandwidth, {eff['compute']:.0%} of peak "
            f"FLOPS ({ld['efficiency_source']})",
            "dim",
        )
    )


def show_traffic(d: dict[str, Any]) -> None:
    """Slots, replicas and cost for the traffic asked for."""
    t = d["traffic"]
    if t is None:
        return
    verdict = (
        styled("meets the targets", "green")
        if t["meets_targets"]
        else styled("misses the targets", "red")
    )
    echo(
        f"traffic {t['requests_per_day']:,.0f} requests/day (peak x{t['peak_factor']:g} = "
        f"{t['peak_requests_per_s']} /s): {t['replicas']} replica(s) x {t['slots']} slot(s) "
        f"(at most {t['max_slots_fitting']} fit), ",
        verdict,
        f", first token {t['ttft_s']} s, {t['per_stream_tokens_per_s']} tokens/s a stream, "
        f"utilisation {t['utilisation']:.0%} (peak {t['peak_utilisation']:.0%})",
    )
    if t["usd_per_hour"] is not None:
        echo(
            f"cost: {_money(t['usd_per_hour'])}/h · {_money(t['usd_per_day'])}/day · "
            f"{_money(t['usd_per_request'])} a request · "
            f"{_money(t['usd_per_million_input_tokens'])} per 1M input, "
            f"{_money(t['usd_per_million_output_tokens'])} per 1M output tokens "
            f"(split by machine time: prompt {t['input_cost_share']:.0%})"
        )


def show_apis(d: dict[str, Any]) -> None:
    """The closed APIs beside this plan: per request, per day and the break-even traffic."""
    rows = d["api_comparison"]
    if not rows:
        return
    table = Table(title="closed APIs for the same requests", show_edge=False)
    for col in ("API", "$/1M in", "$/1M out", "$/request", "$/day", "break-even/day", "as of"):
        table.add_column(col, justify="left" if col in ("API", "as of") else "right")
    above = False
    for a in rows:
        even = a["break_even_requests_per_day"]
        even_text = "-" if even is None else f"{even:,.0f}"
        if a["break_even_above_capacity"]:
            even_text, above = even_text + " *", True
        table.add_row(
            *cells(
                a["model"],
                f"{a['usd_per_million_input_tokens']:g}",
                f"{a['usd_per_million_output_tokens']:g}",
                _money(a["usd_per_request"]),
                _money(a["usd_per_day"]),
                even_text,
            ),
            styled(f"old ({a['as_of'][:7]})", "yellow") if a["old"] else line(a["as_of"]),
        )
    console.print(table)
    if above:
        cap = next(a["replica_capacity_requests_per_day"] for a in rows)
        echo(
            styled(
                f"* above one replica's capacity ({cap:,.0f} requests/day at the peak factor): "
                "the API stays cheaper at any traffic",
                "dim",
            )
        )
