"""How `deployer top` prints a frame: a refreshing table, one table, or one JSON line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from deployer.cli.output import cells, console

if TYPE_CHECKING:
    from rich.table import Table

    from deployer.core.serve.metrics import TopFrame


def _rows(f: TopFrame) -> list[tuple[str, str]]:
    kv = (
        f"{f.kv_use_pct:.1f}% ({f.kv_used_cells} of {f.kv_total_cells} cells)"
        if f.kv_use_pct is not None
        else "unknown (/slots did not answer)"
    )
    # The reason is in the JSON (requests_per_s_note) and docs/metrics.md; the table stays narrow.
    req = f"{f.requests_per_s:.2f}" if f.requests_per_s is not None else "n/a (no counter)"
    return [
        ("requests/s", req),
        ("tokens/s (generated)", f"{f.tokens_per_s:.1f}"),
        ("tokens/s (prompt)", f"{f.prompt_tokens_per_s:.1f}"),
        ("requests processing", str(f.requests_processing)),
        ("requests deferred (queue)", str(f.requests_deferred)),
        ("KV cache use", kv),
        ("longest sequence", "-" if f.longest_sequence_tokens is None else
         f"{f.longest_sequence_tokens} tokens"),
        ("tokens generated (finished requests)", str(f.tokens_predicted_total)),
    ]  # fmt: skip


def frame_table(f: TopFrame) -> Table:
    """One frame as a two-column table titled with the deployment and the interval."""
    from rich.table import Table

    note = " (server restarted: counters reset)" if f.counter_reset else ""
    table = Table(
        title=f"{f.name} at {f.endpoint}, over {f.interval_s:.1f} s{note}",
        title_justify="left",
        show_header=False,
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, value in _rows(f):
        table.add_row(*cells(label, value))
    return table


def print_frame_once(f: TopFrame) -> None:
    """Print one frame as a table."""
    console.print(frame_table(f))


def print_frame_json(f: TopFrame) -> None:
    """One frame as one line of JSON (a stream of them without --once)."""
    sys.stdout.write(json.dumps(f.as_dict()) + "\n")
    sys.stdout.flush()


def show_live(name: str, interval_s: float, frames: Iterator[TopFrame]) -> None:
    """Redraw the table in place as each frame comes, until Ctrl-C."""
    from rich.live import Live
    from rich.text import Text

    waiting = Text(f"{name}: first sample taken, next in {interval_s:g} s (Ctrl-C ends)")
    with Live(waiting, console=console.get(), auto_refresh=False, transient=False) as live:
        for f in frames:
            live.update(frame_table(f), refresh=True)
