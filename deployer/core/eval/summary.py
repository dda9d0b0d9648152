"""Per-target numbers and the winner of each column, from the scored results."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from deployer.core.eval.cost import Pricing, usd_per_item
from deployer.core.eval.items import EvalData
from deployer.core.eval.runbook import ItemResult
from deployer.core.eval.stats import Interval, busy_seconds, percentile, score_interval
from deployer.core.eval.targets import TargetSpec

# The columns a winner is picked for, and whether more is better.
WINNER_COLUMNS: dict[str, bool] = {
    "score": True,
    "latency_p50_s": False,
    "latency_p95_s": False,
    "usd_per_item": False,
    "failed": False,
}


@dataclass(frozen=True)
class TargetSummary:
    """What one target did over the data."""

    label: str
    kind: str
    items: int
    answered: int
    failed: int
    failures: dict[str, int]  # error kind -> count
    failure_example: dict[str, str]  # error kind -> one message
    score: float | None
    interval: Interval | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    tokens_in: int
    tokens_out: int
    busy_s: float
    usd_per_item: float | None
    pricing: Pricing
    by_scorer: dict[str, tuple[int, int]] = field(default_factory=dict)  # type -> (passed, n)
    without_usage: int = 0  # answers whose server reported no token counts

    def as_json(self) -> dict[str, Any]:
        """The `--json` form of one target (docs/eval.md; fields are only ever added)."""
        iv = self.interval
        return {
            "target": self.label, "kind": self.kind, "items": self.items,
            "answered": self.answered, "failed": self.failed, "failures": dict(self.failures),
            "score": _round(self.score),
            "ci95": None if iv is None else {"low": _round(iv.low), "high": _round(iv.high),
                                             "method": iv.method},
            "latency_p50_s": _round(self.latency_p50_s), "latency_p95_s": _round(self.latency_p95_s),
            "tokens_in": self.tokens_in, "tokens_out": self.tokens_out,
            "busy_s": _round(self.busy_s),
            "usd_per_item": None if self.usd_per_item is None else round(self.usd_per_item, 9),
            "cost_basis": self.pricing.basis, "price_source": self.pricing.source or None,
            "by_scorer": {k: {"passed": p, "n": n} for k, (p, n) in self.by_scorer.items()},
            "answered_without_usage": self.without_usage,
        }  # fmt: skip


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def summarize(
    target: TargetSpec, data: EvalData, results: dict[tuple[str, str], ItemResult], pricing: Pricing
) -> TargetSummary:
    """One target's summary over every item of `data` (an item never asked counts as neither
    answered nor failed; a failed one scores 0)."""
    mine = [results[(target.label, i.id)] for i in data.items if (target.label, i.id) in results]
    answered = [r for r in mine if r.ok]
    failed = [r for r in mine if not r.ok]
    failures = Counter(r.error_kind or "error" for r in failed)
    examples: dict[str, str] = {}
    for r in failed:
        examples.setdefault(r.error_kind or "error", r.error or "")
    scores = [r.score for r in mine]
    by_scorer: dict[str, list[int]] = {}
    for r in answered:
        for s in r.scores:
            counts = by_scorer.setdefault(s.type, [0, 0])
            counts[0] += int(s.passed)
            counts[1] += 1
    latencies = [r.latency_s for r in answered if r.latency_s is not None]
    tokens_in = sum(r.tokens_in or 0 for r in answered)
    tokens_out = sum(r.tokens_out or 0 for r in answered)
    # The machine is held while a request fails too (a timeout can hold it for minutes): the
    # hourly price is spread over every request's time, answered or not.
    busy = busy_seconds([(r.started, r.ended) for r in mine if r.ended > 0])
    # Priced per token, an answer without `usage` would cost nothing and make its target look
    # cheapest: price the answers that reported their tokens, and say how many did not.
    metered = [r for r in answered if r.tokens_in is not None and r.tokens_out is not None]
    if pricing.basis == "tokens":
        cost = usd_per_item(pricing, answered=len(metered), busy_s=busy,
                            tokens_in=sum(r.tokens_in or 0 for r in metered),
                            tokens_out=sum(r.tokens_out or 0 for r in metered))  # fmt: skip
    else:
        cost = usd_per_item(pricing, answered=len(answered), tokens_in=tokens_in,
                            tokens_out=tokens_out, busy_s=busy)  # fmt: skip
    return TargetSummary(
        label=target.label, kind=target.kind, items=len(data.items), answered=len(answered),
        failed=len(failed), failures=dict(failures), failure_example=examples,
        score=sum(scores) / len(scores) if answered else None,
        interval=score_interval(scores) if answered else None,
        latency_p50_s=percentile(latencies, 50), latency_p95_s=percentile(latencies, 95),
        tokens_in=tokens_in, tokens_out=tokens_out, busy_s=busy,
        usd_per_item=cost, pricing=pricing,
        by_scorer={k: (v[0], v[1]) for k, v in by_scorer.items()},
        without_usage=len(answered) - len(metered),
    )  # fmt: skip


def column_value(summary: TargetSummary, column: str) -> float | None:
    """The number a column compares."""
    value = getattr(summary, column)
    return None if value is None else float(value)


def winners(summaries: list[TargetSummary]) -> dict[str, list[str]]:
    """Per column, the targets with the best value; a column where every target with a value
    ties (or only one has a value) has no winner."""
    out: dict[str, list[str]] = {}
    for column, higher in WINNER_COLUMNS.items():
        valued = [(s.label, v) for s in summaries if (v := column_value(s, column)) is not None]
        if len(valued) < 2:
            continue
        best = max(v for _, v in valued) if higher else min(v for _, v in valued)
        top = [label for label, v in valued if v == best]
        if len(top) < len(valued):
            out[column] = top
    return out


def clearly_ahead(summaries: list[TargetSummary], label: str) -> bool:
    """Whether `label`'s score interval lies wholly above every other target's."""
    mine = next((s.interval for s in summaries if s.label == label), None)
    if mine is None:
        return False
    others = [s.interval for s in summaries if s.label != label and s.interval is not None]
    return bool(others) and all(mine.low > o.high for o in others)
