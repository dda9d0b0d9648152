"""The shareable report of a run: Markdown or HTML, every value escaped for its format.

Labels, ids and failure messages come from the user's files and from servers: in Markdown a
`|` would split a table cell and `<script>` would be live HTML in most renderers, so both
formats escape them (and any control character) before they are written."""

from __future__ import annotations

import html
from collections.abc import Callable

from deployer.core.eval.flow import EvalOutcome
from deployer.core.eval.summary import TargetSummary, clearly_ahead
from deployer.core.untrusted import printable

CI_NOTE = (
    "score: the mean item score (an item scores the share of its scorers that passed; a failed "
    "request scores 0). 95% CI: Wilson's interval when every item passed or failed outright, "
    "else a percentile bootstrap of the mean (2,000 resamples, seed 0). If the run were repeated "
    "on many data sets like this one, about 95% of such intervals would hold the target's true "
    "score; two targets whose intervals overlap are not shown apart by this data."
)
COST_NOTE = (
    "$/item: API targets, the tokens the server reported times its price per 1M input/output "
    "tokens (answers the server reported no tokens for are left out, not counted as free); "
    "self-hosted targets, the machine's USD/hour times the time a request was in "
    "flight, divided by the items answered."
)

HEADERS = ("target", "score", "95% CI", "p50 s", "p95 s", "tokens in/out", "$/item", "failed")
_COLUMN_OF = {1: "score", 3: "latency_p50_s", 4: "latency_p95_s", 6: "usd_per_item", 7: "failed"}


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def row_cells(s: TargetSummary) -> list[str]:
    """A target's row as plain text cells (the terminal table uses the same)."""
    iv = s.interval
    return [
        s.label,
        _num(s.score),
        "-" if iv is None else f"{iv.low:.3f}-{iv.high:.3f} ({iv.method})",
        _num(s.latency_p50_s, 2),
        _num(s.latency_p95_s, 2),
        f"{s.tokens_in}/{s.tokens_out}",
        _usd(s.usd_per_item),
        str(s.failed),
    ]


def winner_marks(outcome: EvalOutcome, s: TargetSummary) -> set[int]:
    """The cell indexes where `s` is the best of all targets."""
    return {i for i, col in _COLUMN_OF.items() if s.label in outcome.winners.get(col, [])}


def md_escape(value: object) -> str:
    """A value as literal text inside a Markdown table cell or line."""
    text = printable(value)
    text = html.escape(text, quote=False)  # no live HTML: & < > become entities
    for ch in "\\`*_[]|#":
        text = text.replace(ch, "\\" + ch)
    return text


def _failure_lines(outcome: EvalOutcome, esc: Callable[[object], str]) -> list[str]:
    lines = []
    for s in outcome.summaries:
        for kind, n in sorted(s.failures.items()):
            example = s.failure_example.get(kind, "")
            lines.append(f"{esc(s.label)}: {n} x {esc(kind)}: {esc(example[:200])}")
    return lines


def markdown_report(outcome: EvalOutcome) -> str:
    """The report as Markdown."""
    m = outcome.manifest
    out = [
        "# deployer eval report",
        "",
        f"Data: {md_escape(m['data_file'])} ({m['items']} items, sha256 "
        f"{md_escape(m['data_sha256'][:16])}...); temperature {m['settings']['temperature']}, "
        f"seed {m['settings']['seed']}, max_tokens {m['settings']['max_tokens']} by default.",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join("---" for _ in HEADERS) + "|",
    ]
    for s in outcome.summaries:
        cells = [md_escape(c) for c in row_cells(s)]
        for i in winner_marks(outcome, s):
            cells[i] = f"**{cells[i]}**"
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "Best in each column in **bold**.", ""]
    out += _ahead_lines(outcome, md_escape)
    out += ["## Per scorer", "", "| target | scorer | passed |", "|---|---|---|"]
    for s in outcome.summaries:
        for kind, (passed, n) in sorted(s.by_scorer.items()):
            out.append(f"| {md_escape(s.label)} | {md_escape(kind)} | {passed}/{n} |")
    failures = _failure_lines(outcome, md_escape)
    if failures:
        out += ["", "## Failures", "", *(f"- {f}" for f in failures)]
    out += ["", "## How to read it", "", CI_NOTE, "", COST_NOTE, ""]
    return "\n".join(out)


def _ahead_lines(outcome: EvalOutcome, esc: Callable[[object], str]) -> list[str]:
    top = outcome.winners.get("score", [])
    if len(top) != 1:
        return []
    label = top[0]
    if clearly_ahead(outcome.summaries, label):
        return [f"{esc(label)} scores best, and its interval lies above every other target's.", ""]
    return [f"{esc(label)} scores best, but its interval overlaps another target's: "
            "this data does not show them apart.", ""]  # fmt: skip


def _h(value: object) -> str:
    return html.escape(printable(value), quote=True)


def html_report(outcome: EvalOutcome) -> str:
    """The report as one self-contained HTML page (no script, no external resource)."""
    m = outcome.manifest
    rows = []
    for s in outcome.summaries:
        marks = winner_marks(outcome, s)
        tds = "".join(
            f"<td><b>{_h(c)}</b></td>" if i in marks else f"<td>{_h(c)}</td>"
            for i, c in enumerate(row_cells(s))
        )
        rows.append(f"<tr>{tds}</tr>")
    scorer_rows = [
        f"<tr><td>{_h(s.label)}</td><td>{_h(k)}</td><td>{p}/{n}</td></tr>"
        for s in outcome.summaries
        for k, (p, n) in sorted(s.by_scorer.items())
    ]
    failures = "".join(f"<li>{f}</li>" for f in _failure_lines(outcome, _h))
    head = "".join(f"<th>{_h(h)}</th>" for h in HEADERS)
    ahead = "".join(f"<p>{line}</p>" for line in _ahead_lines(outcome, _h) if line)
    return "\n".join([
        "<!doctype html>",
        '<html><head><meta charset="utf-8"><title>deployer eval report</title>',
        "<style>table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px}"
        "</style></head><body>",
        "<h1>deployer eval report</h1>",
        f"<p>Data: <code>{_h(m['data_file'])}</code> ({m['items']} items, sha256 "
        f"{_h(m['data_sha256'][:16])}...); temperature {_h(m['settings']['temperature'])}, seed "
        f"{_h(m['settings']['seed'])}, max_tokens {_h(m['settings']['max_tokens'])} by default.</p>",
        f"<table><tr>{head}</tr>{''.join(rows)}</table>",
        "<p>Best in each column in <b>bold</b>.</p>",
        ahead,
        "<h2>Per scorer</h2>",
        f"<table><tr><th>target</th><th>scorer</th><th>passed</th></tr>{''.join(scorer_rows)}</table>",
        f"<h2>Failures</h2><ul>{failures}</ul>" if failures else "",
        f"<h2>How to read it</h2><p>{_h(CI_NOTE)}</p><p>{_h(COST_NOTE)}</p>",
        "</body></html>",
        "",
    ])  # fmt: skip


def outcome_json(outcome: EvalOutcome, run_dir: str) -> dict[str, object]:
    """The `deployer eval --json` document (docs/eval.md; fields are only ever added)."""
    m = outcome.manifest
    return {
        "run_dir": run_dir,
        "data": {"file": m["data_file"], "sha256": m["data_sha256"], "items": m["items"]},
        "settings": m["settings"],
        "targets": [s.as_json() for s in outcome.summaries],
        "winners": outcome.winners,
        "reused": outcome.reused,
        "skipped_lines": outcome.skipped_lines,
        "notes": outcome.notes,
    }
