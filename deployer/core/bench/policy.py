"""Which concurrency levels a sweep runs, the latency target a level must meet, the best level
under it, and what that level costs and can serve."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from deployer.core.bench.stats import LevelStats
from deployer.core.errors import InvalidRequest

MAX_CONCURRENCY = 1024
MAX_LEVELS = 32
DEFAULT_MAX_TTFT_S = 10.0
DEFAULT_MIN_STREAM_TOKENS_PER_S = 5.0  # about reading speed: slower streams feel stuck
DEFAULT_MAX_ERROR_RATE = 0.01


def default_levels(max_concurrency: int) -> list[int]:
    """1, 2, 4, ... up to `max_concurrency`, which is always the last level."""
    if not 1 <= max_concurrency <= MAX_CONCURRENCY:
        raise InvalidRequest(f"concurrency {max_concurrency} is not in 1..{MAX_CONCURRENCY}")
    levels, c = [], 1
    while c < max_concurrency:
        levels.append(c)
        c *= 2
    return [*levels, max_concurrency]


def parse_levels(text: str) -> list[int]:
    """`--concurrency 1,2,4`: whole numbers, rising, each in 1..MAX_CONCURRENCY."""
    parts = [p.strip() for p in text.split(",")]
    if not parts or len(parts) > MAX_LEVELS or not all(p.isdigit() and len(p) <= 5 for p in parts):
        raise InvalidRequest(
            f"--concurrency {text[:60]!r} is not a list of whole numbers",
            f"Use up to {MAX_LEVELS} rising numbers, e.g. --concurrency 1,2,4.",
        )
    levels = [int(p) for p in parts]
    if any(not 1 <= c <= MAX_CONCURRENCY for c in levels) or levels != sorted(set(levels)):
        raise InvalidRequest(
            f"--concurrency {text[:60]!r} must rise, each level in 1..{MAX_CONCURRENCY}"
        )
    return levels


def _positive(value: float | None, flag: str) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise InvalidRequest(f"{flag} {value} is not a positive number")
    return value


@dataclass(frozen=True)
class LatencyTarget:
    """What a level must meet to count: p95 TTFT, median stream speed, p95 end-to-end, errors."""

    max_ttft_s: float | None = DEFAULT_MAX_TTFT_S
    min_stream_tokens_per_s: float | None = DEFAULT_MIN_STREAM_TOKENS_PER_S
    max_e2e_s: float | None = None
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE

    def __post_init__(self) -> None:
        _positive(self.max_ttft_s, "--max-ttft-s")
        _positive(self.min_stream_tokens_per_s, "--min-stream-tokens-per-s")
        _positive(self.max_e2e_s, "--max-e2e-s")
        if not (math.isfinite(self.max_error_rate) and 0 <= self.max_error_rate <= 1):
            raise InvalidRequest(f"--max-error-rate {self.max_error_rate} is not in [0, 1]")

    def broken_by(self, level: LevelStats) -> list[str]:
        """Why `level` misses the target, in words (empty: it meets it)."""
        why = []
        if level.requests == 0 or level.completed == 0:
            return ["no request completed"]
        rate = level.error_count / level.requests
        if rate > self.max_error_rate:
            why.append(f"{rate:.0%} errors > {self.max_error_rate:.0%}")
        ttft = level.ttft.p95
        if self.max_ttft_s is not None and ttft is not None and ttft > self.max_ttft_s:
            why.append(f"TTFT p95 {ttft:.2f}s > {self.max_ttft_s:g}s")
        speed = level.stream_tokens_per_s
        floor = self.min_stream_tokens_per_s
        if floor is not None and speed is not None and speed < floor:
            why.append(f"stream {speed:.1f} tok/s < {floor:g}")
        e2e = level.e2e.p95
        if self.max_e2e_s is not None and e2e is not None and e2e > self.max_e2e_s:
            why.append(f"e2e p95 {e2e:.2f}s > {self.max_e2e_s:g}s")
        return why

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "max_ttft_s": self.max_ttft_s,
            "min_stream_tokens_per_s": self.min_stream_tokens_per_s,
            "max_e2e_s": self.max_e2e_s,
            "max_error_rate": self.max_error_rate,
        }


def best_level(levels: list[LevelStats], target: LatencyTarget) -> LevelStats | None:
    """The level with the most output tokens/s among those that meet `target`."""
    good = [lv for lv in levels if not lv.interrupted and not target.broken_by(lv)]
    return max(good, key=lambda lv: lv.aggregate_tokens_per_s, default=None)


@dataclass(frozen=True)
class Costs:
    """What a level's throughput costs at an hourly price, and what it serves in a day."""

    usd_per_million_output_tokens: float | None
    usd_per_request: float | None
    requests_per_day: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "usd_per_million_output_tokens": _round(self.usd_per_million_output_tokens, 4),
            "usd_per_request": _round(self.usd_per_request, 8),
            "requests_per_day": round(self.requests_per_day, 1),
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def costs(tokens_per_s: float, requests_per_s: float, usd_per_hour: float | None) -> Costs:
    """Cost per 1M output tokens and per request at `usd_per_hour`, capacity per day."""
    per_m = per_req = None
    if usd_per_hour is not None:
        if tokens_per_s > 0:
            per_m = usd_per_hour / (tokens_per_s * 3600) * 1e6
        if requests_per_s > 0:
            per_req = usd_per_hour / 3600 / requests_per_s
    return Costs(per_m, per_req, requests_per_s * 86400)
