"""The figures of one concurrency level, from its request samples and its wall time."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from deployer.core.bench.samples import EMPTY, RequestSample


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear between closest ranks (numpy's default method)."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not in [0, 100]")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _median(values: Sequence[float]) -> float | None:
    return percentile(values, 50)


@dataclass(frozen=True)
class Spread:
    """p50, p95 and p99 of one figure, in seconds (None: nothing to measure)."""

    p50: float | None
    p95: float | None
    p99: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The spread of `values`."""
        return cls(percentile(values, 50), percentile(values, 95), percentile(values, 99))

    def as_dict(self) -> dict[str, float | None]:
        """JSON-ready, rounded to microseconds."""
        return {
            k: _round(v, 6) for k, v in (("p50", self.p50), ("p95", self.p95), ("p99", self.p99))
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class LevelStats:
    """What one level measured."""

    concurrency: int
    requests: int  # sent, completed or not
    completed: int
    wall_s: float  # first request's start to the last one's end
    requests_per_s: float
    output_tokens: int
    aggregate_tokens_per_s: float  # output tokens of completed requests over wall_s
    stream_tokens_per_s: float | None  # median decode speed one stream saw
    server_stream_tokens_per_s: float | None  # median, llama-server's own timings
    prompt_tokens: float | None  # median prompt tokens (from usage)
    prefill_tokens_per_s: float | None  # median, llama-server's timings (else prompt/ttft)
    ttft: Spread
    inter_token: Spread
    e2e: Spread
    errors: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False

    @property
    def error_count(self) -> int:
        """Requests that ended in an error."""
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the `levels[]` entries of `bench --json`)."""
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "completed": self.completed,
            "wall_s": round(self.wall_s, 4),
            "requests_per_s": round(self.requests_per_s, 4),
            "output_tokens": self.output_tokens,
            "aggregate_tokens_per_s": round(self.aggregate_tokens_per_s, 3),
            "stream_tokens_per_s": _round(self.stream_tokens_per_s, 3),
            "server_stream_tokens_per_s": _round(self.server_stream_tokens_per_s, 3),
            "prompt_tokens": _round(self.prompt_tokens, 1),
            "prefill_tokens_per_s": _round(self.prefill_tokens_per_s, 3),
            "ttft_s": self.ttft.as_dict(),
            "inter_token_s": self.inter_token.as_dict(),
            "e2e_s": self.e2e.as_dict(),
            "errors": dict(sorted(self.errors.items())),
            "interrupted": self.interrupted,
        }


def _prefill_rate(s: RequestSample) -> float | None:
    if s.timings is not None and s.timings.prompt_per_second > 0:
        return s.timings.prompt_per_second
    ttft = s.ttft_s
    if s.prompt_tokens and ttft and ttft > 0:
        return s.prompt_tokens / ttft  # includes the network and queueing: a lower bound
    return None


def level_stats(
    concurrency: int, samples: Sequence[RequestSample], *, interrupted: bool = False
) -> LevelStats:
    """The figures of one level from its samples (times relative to one clock)."""
    ok = [s for s in samples if s.ok]
    errors = Counter(s.error or EMPTY for s in samples if not s.ok)
    wall = max(s.end_s for s in samples) - min(s.start_s for s in samples) if samples else 0.0
    tokens = sum(s.output_tokens for s in ok)
    rates = [r for s in ok if (r := s.stream_tokens_per_s()) is not None]
    prefill = [r for s in ok if (r := _prefill_rate(s)) is not None]
    prompts = [float(s.prompt_tokens) for s in ok if s.prompt_tokens is not None]
    return LevelStats(
        concurrency=concurrency,
        requests=len(samples),
        completed=len(ok),
        wall_s=wall,
        requests_per_s=len(ok) / wall if wall > 0 else 0.0,
        output_tokens=tokens,
        aggregate_tokens_per_s=tokens / wall if wall > 0 else 0.0,
        stream_tokens_per_s=_median(rates),
        server_stream_tokens_per_s=_median(
            [s.timings.predicted_per_second for s in ok if s.timings is not None]
        ),
        prompt_tokens=_median(prompts),
        prefill_tokens_per_s=_median(prefill),
        ttft=Spread.of([t for s in ok if (t := s.ttft_s) is not None]),
        inter_token=Spread.of([g for s in ok for g in s.inter_token_s()]),
        e2e=Spread.of([s.e2e_s for s in ok]),
        errors=dict(errors),
        interrupted=interrupted,
    )
