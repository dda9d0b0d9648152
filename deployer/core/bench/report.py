"""The shareable report: one self-contained HTML (or SVG) file, an inline chart of aggregate
throughput against TTFT p95 and the table of levels. Every value from the run (names, URLs,
error kinds) is escaped for HTML/XML; nothing is fetched when the file is opened."""

from __future__ import annotations

from html import escape
from typing import Any

W, H, PAD = 640, 360, 56


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return escape(str(value))


def _points(levels: list[dict[str, Any]], predicted: bool) -> list[tuple[float, float, int]]:
    out = []
    for lv in levels:
        src = lv.get("predicted") if predicted else lv
        if not src:
            continue
        ttft = src["ttft_burst_s"] if predicted else src["ttft_s"]["p95"]
        tps = src["delivered_tokens_per_s" if predicted else "aggregate_tokens_per_s"]
        if ttft is not None and tps is not None:
            out.append((float(ttft), float(tps), int(lv["concurrency"])))
    return out


def chart_svg(doc: dict[str, Any]) -> str:
    """An SVG chart: aggregate output tokens/s (y) against TTFT p95 (x), a point a level."""
    measured = _points(doc["levels"], predicted=False)
    predicted = _points(doc["levels"], predicted=True)
    both = measured + predicted
    x_max = max((p[0] for p in both), default=1.0) * 1.1 or 1.0
    y_max = max((p[1] for p in both), default=1.0) * 1.1 or 1.0

    def xy(x: float, y: float) -> tuple[float, float]:
        return PAD + x / x_max * (W - 2 * PAD), H - PAD - y / y_max * (H - 2 * PAD)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" '
        f'height="{H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="black"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="black"/>',
        f'<text x="{W / 2}" y="{H - 16}" text-anchor="middle">TTFT p95 (s), 0 to {x_max:.2f}</text>',
        f'<text x="16" y="{H / 2}" transform="rotate(-90 16 {H / 2})" text-anchor="middle">'
        f"aggregate output tokens/s, 0 to {y_max:.1f}</text>",
    ]
    for series, colour, filled in ((measured, "#1f6feb", True), (predicted, "#888888", False)):
        if not series:
            continue
        path = " ".join(f"{a:.1f},{b:.1f}" for a, b in (xy(x, y) for x, y, _ in series))
        dash = "" if filled else ' stroke-dasharray="4 3"'
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}"{dash}/>')
        for x, y, c in series:
            px, py = xy(x, y)
            fill = colour if filled else "white"
            parts.append(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{fill}" stroke="{colour}"/>'
                f'<text x="{px + 6:.1f}" y="{py - 6:.1f}">{c}</text>'
            )
    parts.append(
        f'<text x="{W - PAD}" y="{PAD - 20}" text-anchor="end">'
        '<tspan fill="#1f6feb">● measured</tspan>  <tspan fill="#888888">○ predicted</tspan>'
        "</text></svg>"
    )
    return "\n".join(parts)


_COLUMNS = (
    ("streams", lambda lv: lv["concurrency"]),
    ("req/s", lambda lv: lv["requests_per_s"]),
    ("output tok/s", lambda lv: lv["aggregate_tokens_per_s"]),
    ("predicted tok/s", lambda lv: (lv["predicted"] or {}).get("delivered_tokens_per_s")),
    ("stream tok/s", lambda lv: lv["stream_tokens_per_s"]),
    ("TTFT p50 s", lambda lv: lv["ttft_s"]["p50"]),
    ("TTFT p95 s", lambda lv: lv["ttft_s"]["p95"]),
    ("TTFT p99 s", lambda lv: lv["ttft_s"]["p99"]),
    ("ITL p50 s", lambda lv: lv["inter_token_s"]["p50"]),
    ("ITL p99 s", lambda lv: lv["inter_token_s"]["p99"]),
    ("e2e p50 s", lambda lv: lv["e2e_s"]["p50"]),
    ("e2e p99 s", lambda lv: lv["e2e_s"]["p99"]),
    ("$/1M out", lambda lv: lv["costs"]["usd_per_million_output_tokens"]),
    ("errors", lambda lv: ", ".join(f"{k} {v}" for k, v in lv["errors"].items()) or "0"),
    ("meets target", lambda lv: lv["meets_target"]),
)


def report_html(doc: dict[str, Any]) -> str:
    """The whole report as one HTML page (`doc` is `bench --json`'s document)."""
    t = doc["target"]
    title = f"deployer bench: {t['name']}"
    head = "".join(f"<th>{escape(name)}</th>" for name, _ in _COLUMNS)
    rows = "".join(
        "<tr>" + "".join(f"<td>{_num(get(lv), 3)}</td>" for _, get in _COLUMNS) + "</tr>"
        for lv in doc["levels"]
    )
    best = doc["best"]
    verdict = (
        f"best under the target: {best['concurrency']} streams, "
        f"{best['aggregate_tokens_per_s']:.1f} output tokens/s, "
        f"{best['costs']['requests_per_day']:.0f} requests/day"
        if best
        else "no level met the latency target"
    )
    facts = [
        ("endpoint", t["endpoint"]),
        ("model", f"{t['model'] or '-'} {t['quant'] or ''}".strip()),
        ("profile", doc["profile"]["id"] or "-"),
        ("request", f"{doc['shape']['prompts']}: ~{doc['shape']['prompt_tokens']} prompt tokens, "
                    f"{doc['shape']['output_tokens']} output tokens"),
        ("measured at", doc["measured_at"]),
        ("stopped", doc["stopped"]),
        ("verdict", verdict),
    ]  # fmt: skip
    items = "".join(f"<li><b>{escape(k)}</b>: {escape(str(v))}</li>" for k, v in facts)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style></head><body>"
        f"<h1>{escape(title)}</h1><ul>{items}</ul>{chart_svg(doc)}"
        f"<table><tr>{head}</tr>{rows}</table></body></html>\n"
    )


def report_for(path_suffix: str, doc: dict[str, Any]) -> str:
    """The report text for a file name ending .html/.htm or .svg."""
    return chart_svg(doc) + "\n" if path_suffix == ".svg" else report_html(doc)
