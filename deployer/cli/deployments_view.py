"""What `deployer ps` prints: one row a deployment, as a table or JSON."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

import typer
from rich.table import Table

from deployer.cli.output import cells, console
from deployer.core.state.records import DeploymentStatus, uptime_s
from deployer.core.untrusted import printable


def fmt_uptime(seconds: float | None) -> str:
    """45s, 12m, 3h05m, 2d04h."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def status_json(
    st: DeploymentStatus, record_path: Callable[[str], str], now: datetime
) -> dict[str, Any]:
    """One `ps --json` row."""
    r, c = st.record, st.container
    live = st.status not in ("exited", "gone", "unknown", "invalid")
    return {
        "name": st.name,
        "status": st.status,
        "model": r.model if r else (c.labels.get("io.deployer.model") if c else None),
        "quant": r.quant if r else (c.labels.get("io.deployer.quant") if c else None),
        "backend": r.backend if r else (c.labels.get("io.deployer.backend") if c else None),
        "runtime": r.runtime if r else "container",
        "endpoint": r.endpoint if r else None,
        "uptime_s": uptime_s(st.started_at, now) if live else None,
        "container_id": c.id if c else (r.container_id if r else None),
        "pid": r.pid if r else None,
        "image": c.image if c else (r.image if r else None),
        "state_file": st.invalid.path if st.invalid else (record_path(r.name) if r else None),
        "problem": st.invalid.message() if st.invalid else None,
        "profile": r.profile if r else None,
        "bench": r.bench if r else None,  # the last `deployer bench` summary
        "adapters": r.adapters if r else [],  # LoRA adapters loaded at start, with their scales
    }


def with_adapters(model: str, adapters: list[dict[str, Any]]) -> str:
    """The model, then each LoRA adapter's file name and start scale: 'demo +a.gguf@0.5'."""
    names = [f"+{PurePosixPath(a['path']).name}@{a['scale']:g}" for a in adapters]
    return " ".join([model, *names])


def fmt_bench(bench: dict[str, Any] | None) -> str:
    """The last bench's output tokens/s and its stream count: '55.4 @4'."""
    if not bench:
        return "-"
    mark = "" if bench["meets_target"] else "!"
    return f"{bench['aggregate_tokens_per_s']:.1f} @{bench['concurrency']}{mark}"


def print_ps(rows: list[dict[str, Any]], found: list[DeploymentStatus]) -> None:
    """The `ps` table, then a line for each record that could not be read."""
    table = Table()
    for col in ("name", "model", "quant", "backend", "endpoint"):
        table.add_column(col, no_wrap=col in ("name", "endpoint"), overflow="fold")
    table.add_column("health", no_wrap=True, min_width=9)  # never "healt…"
    table.add_column("uptime", no_wrap=True, min_width=6)
    table.add_column("bench tok/s", no_wrap=True, justify="right")
    for row in rows:
        table.add_row(
            *cells(
                row["name"],
                with_adapters(row["model"] or "-", row.get("adapters") or []),
                row["quant"] or "-",
                row["backend"] or "-",
                row["endpoint"] or "-",
                row["status"],
                fmt_uptime(row["uptime_s"]),
                fmt_bench(row["bench"]),
            )
        )
    console.print(table)
    for st in found:
        if st.invalid is not None:
            typer.echo(printable(f"{st.name}: invalid: {st.invalid.message()}"))
