"""What `deployer bench` prints: live progress on stderr, then a table of levels, a terminal
chart of throughput against latency, the verdict, or the JSON document."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer.cli.output import cells, console, echo, err_console, print_json, styled

if TYPE_CHECKING:
    from deployer.cli.bench_setup import Prepared
    from deployer.core.bench.run import BenchOutcome
    from deployer.core.bench.samples import RequestSample
    from deployer.core.bench.stats import LevelStats


class Live:
    """A progress bar per level on a terminal; a line per level otherwise (stderr)."""

    def __init__(self, prep: Prepared, requests: int, *, quiet: bool) -> None:
        self._requests, self._quiet = requests, quiet
        self._levels = list(prep.levels)
        self._progress: Any = None
        self._task: Any = None
        self._done = 0
        self._warming = True  # the first request is the warm-up
        if sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                console=err_console.get(), transient=True,
            )  # fmt: skip
            self._progress.start()
        echo(
            f"benching {prep.target.endpoint}: levels {', '.join(map(str, self._levels))}", err=True
        )

    def on_request(self, sample: RequestSample) -> None:
        """One request ended."""
        if self._warming:
            self._warming = False
            return
        if self._progress is None or self._done >= len(self._levels):
            return
        if self._task is None:
            c = self._levels[self._done]
            self._task = self._progress.add_task(f"{c} stream(s)", total=max(self._requests, c))
        self._progress.advance(self._task)

    def on_level(self, stats: LevelStats, missed: list[str]) -> None:
        """One level finished."""
        if self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)
        self._task = None
        self._done += 1
        tail = f" - missed: {'; '.join(missed)}" if missed else ""
        echo(
            f"{stats.concurrency} stream(s): {stats.aggregate_tokens_per_s:.1f} output tok/s, "
            f"{stats.completed}/{stats.requests} completed{tail}",
            err=True,
        )

    def stop(self) -> None:
        """End the live display."""
        if self._progress is not None:
            self._progress.stop()


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def show_table(doc: dict[str, Any]) -> None:
    """One row a level; the predicted columns only where the model is known."""
    from rich.table import Table

    predicted = any(lv["predicted"] for lv in doc["levels"])
    table = Table(show_edge=False, pad_edge=False)
    heads = ["streams", "req/s", "tok/s", "stream tok/s", "TTFT p50/95/99 s", "ITL p50/99 ms",
             "e2e p50/99 s", "$/1M out", "errors"]  # fmt: skip
    if predicted:
        heads[4:4] = ["predicted tok/s", "predicted TTFT s"]
    for h in heads:
        table.add_column(h, justify="left" if h == "errors" else "right", overflow="fold")
    for lv in doc["levels"]:
        t, itl, e2e = lv["ttft_s"], lv["inter_token_s"], lv["e2e_s"]
        ms = [None if v is None else v * 1000 for v in (itl["p50"], itl["p99"])]
        row = [
            f"{lv['concurrency']}{'' if lv['meets_target'] else ' x'}",
            _f(lv["requests_per_s"]),
            _f(lv["aggregate_tokens_per_s"], 1),
            _f(lv["stream_tokens_per_s"], 1),
            f"{_f(t['p50'])}/{_f(t['p95'])}/{_f(t['p99'])}",
            f"{_f(ms[0], 0)}/{_f(ms[1], 0)}",
            f"{_f(e2e['p50'])}/{_f(e2e['p99'])}",
            _f(lv["costs"]["usd_per_million_output_tokens"]),
            ", ".join(f"{k} x{v}" for k, v in lv["errors"].items()) or "0",
        ]
        if predicted:
            p = lv["predicted"] or {}
            row[4:4] = [_f(p.get("delivered_tokens_per_s"), 1), _f(p.get("ttft_burst_s"))]
        table.add_row(*cells(*row))
    console.print(table)


def chart_lines(doc: dict[str, Any], width: int = 48, height: int = 10) -> list[str]:
    """Aggregate output tokens/s (up) against TTFT p95 (across): each level its stream count."""
    pts = [
        (lv["ttft_s"]["p95"], lv["aggregate_tokens_per_s"], lv["concurrency"])
        for lv in doc["levels"]
        if lv["ttft_s"]["p95"] is not None
    ]
    if not pts:
        return []
    x_max = max(p[0] for p in pts) or 1.0
    y_max = max(p[1] for p in pts) or 1.0
    grid = [[" "] * width for _ in range(height)]
    for x, y, c in pts:
        col = min(width - 1, round(x / x_max * (width - 1)))
        row = height - 1 - min(height - 1, round(y / y_max * (height - 1)))
        label = str(c) if c < 10 else "*"
        grid[row][col] = label
    label_w = len(f"{y_max:.0f}")
    lines = []
    for i, row in enumerate(grid):
        axis = f"{y_max:.0f}" if i == 0 else ("0" if i == height - 1 else "")
        lines.append(f"{axis:>{label_w}} |" + "".join(row))
    lines.append(" " * label_w + " +" + "-" * width)
    lines.append(" " * label_w + f"  0{'TTFT p95 (s)':^{width - 8}}{x_max:.2f}")
    return ["output tok/s by TTFT p95; each point is its stream count", *lines]


def show(doc: dict[str, Any], outcome: BenchOutcome, report: Path | None,
         *, as_json: bool) -> None:  # fmt: skip
    """The whole human output, or the JSON document."""
    if as_json:
        print_json(doc)
        return
    show_table(doc)
    for text in chart_lines(doc):
        echo(text)
    best = doc["best"]
    if best is not None:
        c = best["costs"]
        price = (
            f" · ${_f(c['usd_per_million_output_tokens'])}/1M output tokens"
            f" · ${_f(c['usd_per_request'], 6)}/request"
            if c["usd_per_million_output_tokens"] is not None
            else " · no price for this profile"
        )
        echo(styled(f"best under the target: {best['concurrency']} streams", "bold"),
             f" · {best['aggregate_tokens_per_s']:.1f} output tok/s · "
             f"{c['requests_per_day']:.0f} requests/day{price}")  # fmt: skip
    else:
        echo(styled("no level met the latency target", "red"))
    echo(styled(f"stopped: {doc['stopped']}", "dim"))
    for text in doc["warnings"]:
        echo(styled(f"warning: {text}", "yellow"))
    if doc["errors"]:
        echo("errors: ", ", ".join(f"{k} x{v}" for k, v in doc["errors"].items()))
    for text in doc["notes"] + ([doc["prediction_note"]] if doc["prediction_note"] else []):
        echo(styled(text, "dim"))
    if outcome.calibration_line:
        echo(outcome.calibration_line)
    if outcome.kept_in_record:
        echo(styled(f"kept in {doc['target']['name']}'s record (deployer ps)", "dim"))
    if report is not None:
        echo(f"report: {report}")
