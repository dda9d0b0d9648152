"""The numbers of a run: confidence intervals of a score, latency percentiles, busy time.

A target's score is the mean of its item scores. When every item score is 0 or 1 (each item
passed or failed) the interval is Wilson's score interval for a proportion; when some items
score in between (several scorers, some passed), it is a percentile bootstrap of the mean
(2,000 resamples, a fixed seed, so the same results give the same interval).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Interval:
    """A 95% confidence interval and how it was computed ("wilson" or "bootstrap")."""

    low: float
    high: float
    method: str


def wilson(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson's score interval for `successes` out of `n` (n > 0)."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError("need 0 <= successes <= n and n > 0")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 and n the ends are exactly 0 and 1; rounding would leave them a hair inside.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def bootstrap_mean(
    values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the mean over `resamples` resamples of `values`."""
    if not values:
        raise ValueError("no values")
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    return means[int(0.025 * (resamples - 1))], means[math.ceil(0.975 * (resamples - 1))]


def score_interval(scores: Sequence[float]) -> Interval | None:
    """The 95% interval of the mean of `scores` (Wilson when all are 0 or 1); None when empty."""
    if not scores:
        return None
    if all(s in (0.0, 1.0) for s in scores):
        low, high = wilson(sum(1 for s in scores if s == 1.0), len(scores))
        return Interval(low, high, "wilson")
    low, high = bootstrap_mean(scores)
    return Interval(low, high, "bootstrap")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank `q`th percentile (0 < q <= 100): the smallest value with at least q% of
    the values at or below it; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def busy_seconds(intervals: Sequence[tuple[float, float]]) -> float:
    """How long at least one request was in flight: the length of the union of the
    (start, end) intervals, so parallel requests are not counted twice and the pause between
    a killed run and its resume is not counted at all."""
    total = 0.0
    current: tuple[float, float] | None = None
    for start, end in sorted(intervals):
        if current is None or start > current[1]:
            if current is not None:
                total += current[1] - current[0]
            current = (start, max(start, end))
        else:
            current = (current[0], max(current[1], end))
    if current is not None:
        total += current[1] - current[0]
    return total
