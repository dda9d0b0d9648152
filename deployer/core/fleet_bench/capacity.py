"""A fleet's capacity: what each host serves at its best level under the latency target, and
the sum over the hosts. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deployer.core.bench.sweep import BenchResult
from deployer.core.errors import BenchFailed

MEASURED = "measured"  # a level met the latency target: its throughput counts
BELOW_TARGET = "below-target"  # measured, but no level met the target: counts zero
FAILED = "failed"  # not measured: unreachable, no plan, no request completed
INTERRUPTED = "interrupted"  # Ctrl-C during this host's sweep
NOT_RUN = "not-run"  # after a Ctrl-C, the hosts never reached
OK_RESULTS = {MEASURED, BELOW_TARGET}


@dataclass(frozen=True)
class Capacity:
    """What one host (or the fleet) serves at the latency target, rounded as JSON shows it."""

    concurrency: int | None
    aggregate_tokens_per_s: float
    requests_per_s: float
    requests_per_day: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "concurrency": self.concurrency,
            "aggregate_tokens_per_s": self.aggregate_tokens_per_s,
            "requests_per_s": self.requests_per_s,
            "requests_per_day": self.requests_per_day,
        }


ZERO = Capacity(None, 0.0, 0.0, 0.0)


def capacity_of(result: BenchResult) -> Capacity:
    """The best level under the target (the same figures `bench --json`'s `best` shows); zero
    when no level met it."""
    best = result.best
    if best is None:
        return ZERO
    return Capacity(
        concurrency=best.concurrency,
        aggregate_tokens_per_s=round(best.aggregate_tokens_per_s, 3),
        requests_per_s=round(best.requests_per_s, 4),
        requests_per_day=round(best.requests_per_s * 86400, 1),
    )


def judge(result: BenchResult) -> tuple[str, str | None]:
    """A measured host's result and, unless it met the target, the one-line reason."""
    if result.interrupted:
        return INTERRUPTED, "interrupted (Ctrl-C)"
    if result.completed == 0:
        errors = result.errors() or ({"warm-up": 1} if result.warmup_error else {})
        return FAILED, BenchFailed(result.target.label, errors).message()
    if result.best is None:
        return BELOW_TARGET, f"no level met the latency target ({result.stopped})"
    return MEASURED, None


@dataclass
class HostBench:
    """One host's row: how it was reached, what it serves, its whole sweep."""

    host: str
    result: str
    reason: str | None = None
    name: str | None = None  # the deployment on the host
    via: str | None = None  # 'local' or 'ssh user@address:port'
    bench: BenchResult | None = None

    @property
    def capacity(self) -> Capacity | None:
        """What the host adds to the fleet's total (None: it was not measured)."""
        if self.result in OK_RESULTS and self.bench is not None:
            return capacity_of(self.bench)
        return None

    def as_dict(self) -> dict[str, Any]:
        """One entry of `fleet bench --json`'s `hosts` (docs/fleet.md lists every field)."""
        cap = self.capacity
        return {
            "host": self.host,
            "name": self.name,
            "via": self.via,
            "result": self.result,
            "reason": self.reason,
            "capacity": None if cap is None else cap.as_dict(),
            "bench": None if self.bench is None else self.bench.as_dict(),
        }


def fleet_total(hosts: Sequence[HostBench]) -> dict[str, Any]:
    """The fleet's capacity: the sum of the hosts' rounded figures (so the JSON adds up), and
    how many hosts were measured, below the target, or not measured."""
    caps = [c for h in hosts if (c := h.capacity) is not None]
    return {
        "aggregate_tokens_per_s": round(sum(c.aggregate_tokens_per_s for c in caps), 3),
        "requests_per_s": round(sum(c.requests_per_s for c in caps), 4),
        "requests_per_day": round(sum(c.requests_per_day for c in caps), 1),
        "hosts": len(hosts),
        "measured": sum(h.result == MEASURED for h in hosts),
        "below_target": sum(h.result == BELOW_TARGET for h in hosts),
        "failed": sum(h.result not in OK_RESULTS for h in hosts),
    }
