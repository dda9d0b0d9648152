"""What `deployer top` shows, computed from two samples of llama-server's own metrics.

llama-server (`--metrics`) exports Prometheus counters and gauges at /metrics; the names below
were read from tools/server/server-task.cpp (`to_metrics`) of the pinned build and checked against
a running server. That build exports no request counter and no KV cache gauge (older builds had
`llamacpp:kv_cache_usage_ratio`; it went when llama.cpp's KV API changed), so:
- tokens/s are rates of counters between two samples (a counter that went down means the server
  restarted: the increase is then the new value, as Prometheus's `rate()` counts it); the
  generated-token counter grows only when a request ends, so the tokens of requests still in
  flight (each slot's `n_decoded` in /slots) are added to it, which keeps the rate live;
- KV cache use is read from /slots (each slot's context size and the tokens it holds);
- requests/s is not measurable from this build and is reported as unknown (None), never guessed.

Pure: the sampling (HTTP, parsing) is an adapter behind `MetricsSource`, time is a `Clock`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from deployer.core.clock import Clock
from deployer.core.errors import InvalidRequest

METRICS_PATH = "/metrics"
SLOTS_PATH = "/slots"
PREFIX = "llamacpp:"
# Counters (sample names as exported, `_total` included).
PROMPT_TOKENS = f"{PREFIX}prompt_tokens_total"
TOKENS_PREDICTED = f"{PREFIX}tokens_predicted_total"
PROMPT_SECONDS = f"{PREFIX}prompt_seconds_total"
PREDICTED_SECONDS = f"{PREFIX}tokens_predicted_seconds_total"
DECODE_CALLS = f"{PREFIX}n_decode_total"
# Exported with TYPE counter, but a high-water mark: the longest sequence (prompt + generation).
TOKENS_MAX = f"{PREFIX}n_tokens_max"
# Gauges.
REQUESTS_PROCESSING = f"{PREFIX}requests_processing"
REQUESTS_DEFERRED = f"{PREFIX}requests_deferred"
COUNTERS = (PROMPT_TOKENS, TOKENS_PREDICTED, PROMPT_SECONDS, PREDICTED_SECONDS, DECODE_CALLS)
GAUGES = (REQUESTS_PROCESSING, REQUESTS_DEFERRED, TOKENS_MAX)
REQUIRED = (*COUNTERS, REQUESTS_PROCESSING, REQUESTS_DEFERRED)
# Why requests/s is unknown: shown by `top` and written in its JSON.
NO_REQUEST_COUNTER = "llama-server of this build exports no request counter"

MIN_INTERVAL_S = 0.2
MAX_INTERVAL_S = 3600.0


@dataclass(frozen=True)
class KvUse:
    """KV cache cells held by the slots, and how many the slots have in all; with the tokens
    the requests in flight have generated so far (not yet in the counters)."""

    used_cells: int
    total_cells: int
    in_flight_generated: int = 0

    @property
    def ratio(self) -> float:
        """Used over total (0 when the server reports no cells)."""
        return self.used_cells / self.total_cells if self.total_cells else 0.0


@dataclass(frozen=True)
class MetricsSample:
    """One reading of a server: sample values by name, when it was taken, its KV use."""

    taken_at_s: float  # the Clock's monotonic reading
    values: Mapping[str, float]
    kv: KvUse | None = None
    started_at: str | None = None  # the server's Process-Start-Time-Unix header, if any


class MetricsSource(Protocol):
    """One server's metrics, read now (deployer.adapters.metrics_client is the real one)."""

    def sample(self, taken_at_s: float) -> MetricsSample:
        """Read /metrics (and /slots); MetricsUnavailable or MetricsInvalid on failure."""
        ...


@dataclass(frozen=True)
class TopFrame:
    """One refresh of `deployer top`: rates over the last interval and the gauges now.

    Its JSON (`as_dict`) is a contract: fields are only ever added."""

    name: str
    endpoint: str
    interval_s: float
    requests_per_s: float | None
    requests_per_s_note: str
    prompt_tokens_per_s: float
    tokens_per_s: float
    requests_processing: int
    requests_deferred: int
    kv_used_cells: int | None
    kv_total_cells: int | None
    kv_use_pct: float | None
    longest_sequence_tokens: int | None
    tokens_predicted_total: int
    prompt_tokens_total: int
    counter_reset: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def check_interval(interval_s: float) -> float:
    """The refresh interval, or InvalidRequest when it is too short, too long or not a number."""
    if not math.isfinite(interval_s) or not MIN_INTERVAL_S <= interval_s <= MAX_INTERVAL_S:
        raise InvalidRequest(
            f"--interval {interval_s} is out of range",
            f"Use {MIN_INTERVAL_S}-{MAX_INTERVAL_S:.0f} seconds.",
        )
    return interval_s


def check_watchable(name: str, backend: str) -> None:
    """Refuse a deployment whose server has no Prometheus metrics (Ollama)."""
    if backend != "llamacpp":
        raise InvalidRequest(
            f"'{name}' runs {backend}, which has no Prometheus metrics",
            "deployer top reads llama-server's /metrics: deploy with --backend llamacpp.",
        )


def increase(before: float, after: float) -> tuple[float, bool]:
    """How much a counter grew, and whether it was reset (went down) in between."""
    if after < before:
        return after, True
    return after - before, False


def frame(name: str, endpoint: str, before: MetricsSample, after: MetricsSample) -> TopFrame:
    """Rates between two samples of one server, and the gauges of the later one."""
    dt = after.taken_at_s - before.taken_at_s
    if dt <= 0:
        raise ValueError("samples must be taken in order")
    restarted = (
        before.started_at is not None
        and after.started_at is not None
        and before.started_at != after.started_at
    )
    grown: dict[str, float] = {}
    reset = restarted
    for counter in COUNTERS:
        if restarted:
            grown[counter] = after.values[counter]
            continue
        grown[counter], went_down = increase(before.values[counter], after.values[counter])
        reset = reset or went_down
    # /metrics and /slots are two reads: a request ending between them can make the live total
    # dip by its tokens for one sample; never a negative rate.
    generated = _generated_so_far(after)
    tokens = generated if reset else max(0.0, generated - _generated_so_far(before))
    kv = after.kv
    longest = after.values.get(TOKENS_MAX)
    return TopFrame(
        name=name,
        endpoint=endpoint,
        interval_s=round(dt, 3),
        requests_per_s=None,
        requests_per_s_note=NO_REQUEST_COUNTER,
        prompt_tokens_per_s=round(grown[PROMPT_TOKENS] / dt, 2),
        tokens_per_s=round(tokens / dt, 2),
        requests_processing=int(after.values[REQUESTS_PROCESSING]),
        requests_deferred=int(after.values[REQUESTS_DEFERRED]),
        kv_used_cells=kv.used_cells if kv else None,
        kv_total_cells=kv.total_cells if kv else None,
        kv_use_pct=round(100 * kv.ratio, 1) if kv else None,
        longest_sequence_tokens=int(longest) if longest is not None else None,
        tokens_predicted_total=int(after.values[TOKENS_PREDICTED]),
        prompt_tokens_total=int(after.values[PROMPT_TOKENS]),
        counter_reset=reset,
    )


def _generated_so_far(s: MetricsSample) -> float:
    """Tokens generated since the server started: the counter holds those of finished requests
    (llama-server adds a request's tokens when it ends), /slots those of requests in flight."""
    return s.values[TOKENS_PREDICTED] + (s.kv.in_flight_generated if s.kv else 0)


def watch(
    name: str,
    endpoint: str,
    source: MetricsSource,
    clock: Clock,
    *,
    interval_s: float,
    frames: int | None = None,
) -> Iterator[TopFrame]:
    """Sample every `interval_s` and yield a frame per pair of samples (`frames` of them, or
    until the caller stops)."""
    interval_s = check_interval(interval_s)
    before = source.sample(clock.monotonic())
    made = 0
    while frames is None or made < frames:
        clock.sleep(interval_s)
        after = source.sample(clock.monotonic())
        yield frame(name, endpoint, before, after)
        before = after
        made += 1
