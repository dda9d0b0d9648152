"""What `deployer fleet bench` prints: a line per host as it is measured, the capacity table
with the fleet's total, each failed host's reason; or the JSON document."""

from __future__ import annotations

from typing import Any

from deployer.cli.output import cells, console, echo, line, print_json, styled
from deployer.core.fleet_bench.capacity import MEASURED, OK_RESULTS, HostBench


def on_start(row: HostBench) -> None:
    """A line on stderr as a host's sweep starts (one can take minutes)."""
    echo(f"{row.host}: measuring through {row.via}", err=True)


def on_host(row: HostBench) -> None:
    """One progress line on stderr once a host is done."""
    cap = row.capacity
    figures = f"{cap.aggregate_tokens_per_s:.1f} tok/s" if cap is not None else row.reason or ""
    echo(f"{row.host}: {row.result} {figures}", err=True)


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def show(doc: dict[str, Any], *, as_json: bool) -> None:
    """The JSON document, or the table of hosts and the total."""
    if as_json:
        print_json(doc)
        return
    from rich.table import Table

    t = Table(title=line(f"fleet bench: {doc['inventory']}"), title_justify="left")
    for col in ("host", "via", "result", "streams", "tok/s", "req/s", "req/day"):
        t.add_column(col, overflow="fold")
    for h in doc["hosts"]:
        cap = h["capacity"] or {}
        colour = "green" if h["result"] == MEASURED else (
            "yellow" if h["result"] in OK_RESULTS else "red")  # fmt: skip
        t.add_row(
            *cells(h["host"], h["via"] or "-"), styled(h["result"], colour),
            *cells(_num(cap.get("concurrency"), "d"),
                   _num(cap.get("aggregate_tokens_per_s"), ".1f"),
                   _num(cap.get("requests_per_s"), ".2f"), _num(cap.get("requests_per_day"), ",.0f")),
        )  # fmt: skip
    total = doc["total"]
    t.add_row(
        *cells("total", f"{total['measured']}/{total['hosts']} hosts", "", "",
               f"{total['aggregate_tokens_per_s']:.1f}", f"{total['requests_per_s']:.2f}",
               f"{total['requests_per_day']:,.0f}"),
    )  # fmt: skip
    console.print(t)
    for h in doc["hosts"]:
        if h["reason"]:
            echo(f"{h['host']}: {h['reason']}")
