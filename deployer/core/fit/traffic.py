"""Load, traffic and cost beside closed APIs: what `deployer plan` adds to a plan.

From a plan's chosen configuration: the throughput at the planned slots (`load`); for a daily
request count, the slot count and number of replicas that carry the peak at the latency targets
and what that costs (`traffic`); and each closed API's price for the same requests with the
break-even point (`api_comparison`). Every assumption and default is in docs/plan.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from deployer.core.errors import InvalidRequest
from deployer.core.fit.api_prices import ApiPrice
from deployer.core.fit.calibration import CalibrationKey, Calibrations
from deployer.core.fit.plan import MAX_PARALLEL, Option, PlanResult, evaluate_option, machine_spec
from deployer.core.fit.throughput import Efficiency, LoadPrediction, efficiency_for, predict_load
from deployer.core.hardware.profiles import Profile

DEFAULT_PROMPT_TOKENS = 1000
DEFAULT_OUTPUT_TOKENS = 300
DEFAULT_PEAK_FACTOR = 3.0  # the busiest hour's rate over the day's average
DEFAULT_MAX_TTFT_S = 3.0
DEFAULT_MIN_STREAM_TOKENS_PER_S = 10.0  # faster than people read
SECONDS_PER_DAY = 86_400
MAX_TOKENS = 10_000_000
MAX_REQUESTS_PER_DAY = 1e12


@dataclass(frozen=True)
class TrafficRequest:
    """The traffic to size for; requests_per_day None: no sizing, only the planned slots."""

    requests_per_day: float | None = None
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS
    output_tokens: int = DEFAULT_OUTPUT_TOKENS
    peak_factor: float = DEFAULT_PEAK_FACTOR
    max_ttft_s: float = DEFAULT_MAX_TTFT_S
    min_stream_tokens_per_s: float = DEFAULT_MIN_STREAM_TOKENS_PER_S

    def check(self) -> None:
        """Refuse numbers no traffic has (one line each, exit 2)."""
        rpd = self.requests_per_day
        if rpd is not None and not (0 < rpd <= MAX_REQUESTS_PER_DAY and math.isfinite(rpd)):
            raise InvalidRequest(
                f"--requests-per-day {rpd} is not a request count",
                f"Use a number above 0 and at most {MAX_REQUESTS_PER_DAY:g}.",
            )
        if not 0 <= self.prompt_tokens <= MAX_TOKENS:
            raise InvalidRequest(f"--prompt-tokens {self.prompt_tokens} is outside 0..{MAX_TOKENS}")
        if not 1 <= self.output_tokens <= MAX_TOKENS:
            raise InvalidRequest(f"--output-tokens {self.output_tokens} is outside 1..{MAX_TOKENS}")
        if not (1 <= self.peak_factor <= 1000 and math.isfinite(self.peak_factor)):
            raise InvalidRequest(
                f"--peak-factor {self.peak_factor} is outside 1..1000",
                "It is the busiest hour's rate over the day's average.",
            )
        for flag, value in (
            ("--max-ttft-s", self.max_ttft_s),
            ("--min-stream-tokens-per-s", self.min_stream_tokens_per_s),
        ):
            if not (0 < value < 1e9 and math.isfinite(value)):
                raise InvalidRequest(f"{flag} {value} must be a positive number")


def _r(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


def _usd(x: float | None) -> float | None:
    """Dollars: cents where large, 6 significant digits where a fraction of a cent."""
    if x is None:
        return None
    return round(x, 2) if abs(x) >= 1 else float(f"{x:.6g}")


@dataclass
class LoadView:
    """The load prediction at the planned slots, with its cost and whether a slot holds a request."""

    prediction: LoadPrediction
    slot_cells: int
    usd_per_hour: float | None

    def cost_per_million_output_tokens_usd(self) -> float | None:
        """Dollars per 1M output tokens with every slot busy."""
        agg = self.prediction.aggregate_tokens_per_s
        if self.usd_per_hour is None or agg <= 0:
            return None
        return self.usd_per_hour / (agg * 3600) * 1e6

    def as_dict(self, prompt_tokens: int, output_tokens: int) -> dict[str, Any]:
        """The `load` object of `plan --json`."""
        p = self.prediction
        return {
            "slots": p.slots,
            "prompt_tokens": prompt_tokens,
            "output_tokens": output_tokens,
            "slot_cells": self.slot_cells,
            "request_fits_slot": prompt_tokens + output_tokens <= self.slot_cells,
            "aggregate_tokens_per_s": _r(p.aggregate_tokens_per_s),
            "per_stream_tokens_per_s": _r(p.per_stream_tokens_per_s),
            "prefill_tokens_per_s": _r(p.prefill_tokens_per_s),
            "ttft_s": _r(p.ttft_s, 3),
            "ttft_burst_s": _r(p.ttft_burst_s, 3),
            "e2e_s": _r(p.e2e_s, 3),
            "requests_per_s": _r(p.requests_per_s, 3),
            "compute_bound": p.compute_bound,
            "efficiency": {"memory": p.efficiency.memory, "compute": p.efficiency.compute},
            "efficiency_source": p.efficiency.source,
            "cost_per_million_output_tokens_at_load_usd": _usd(
                self.cost_per_million_output_tokens_usd()
            ),
        }


@dataclass
class TrafficPlan:
    """Slots and replicas for a daily request count, and what they cost."""

    request: TrafficRequest
    max_slots_fitting: int
    load: LoadPrediction
    replicas: int
    meets_targets: bool
    usd_per_hour: float | None  # one replica
    problems: list[str] = field(default_factory=list)

    @property
    def average_requests_per_s(self) -> float:
        """The day's average arrival rate."""
        return (self.request.requests_per_day or 0) / SECONDS_PER_DAY

    @property
    def peak_requests_per_s(self) -> float:
        """The peak arrival rate the replicas must carry."""
        return self.average_requests_per_s * self.request.peak_factor

    def input_time_share(self) -> float:
        """Share of a request's machine time spent on its prompt (prefill) rather than output."""
        t = self.request
        prefill_s = t.prompt_tokens / self.load.prefill_tokens_per_s
        decode_s = t.output_tokens / self.load.aggregate_tokens_per_s
        return prefill_s / (prefill_s + decode_s)

    def as_dict(self) -> dict[str, Any]:
        """The `traffic` object of `plan --json`."""
        t, load = self.request, self.load
        capacity = self.replicas * load.requests_per_s
        per_hour = per_day = per_request = per_m_in = per_m_out = None
        if self.usd_per_hour is not None and t.requests_per_day:
            per_hour = self.replicas * self.usd_per_hour
            per_day = per_hour * 24
            per_request = per_day / t.requests_per_day
            share = self.input_time_share()
            if t.prompt_tokens:
                per_m_in = per_request * share / t.prompt_tokens * 1e6
            per_m_out = per_request * (1 - share) / t.output_tokens * 1e6
        return {
            "requests_per_day": t.requests_per_day,
            "prompt_tokens": t.prompt_tokens,
            "output_tokens": t.output_tokens,
            "peak_factor": t.peak_factor,
            "average_requests_per_s": _r(self.average_requests_per_s, 4),
            "peak_requests_per_s": _r(self.peak_requests_per_s, 4),
            "max_ttft_s": t.max_ttft_s,
            "min_stream_tokens_per_s": t.min_stream_tokens_per_s,
            "max_slots_fitting": self.max_slots_fitting,
            "slots": load.slots,
            "replicas": self.replicas,
            "meets_targets": self.meets_targets,
            "problems": self.problems,
            "ttft_s": _r(load.ttft_s, 3),
            "per_stream_tokens_per_s": _r(load.per_stream_tokens_per_s),
            "replica_requests_per_s": _r(load.requests_per_s, 4),
            "utilisation": _r(self.average_requests_per_s / capacity, 3) if capacity else None,
            "peak_utilisation": _r(self.peak_requests_per_s / capacity, 3) if capacity else None,
            "usd_per_hour": _usd(per_hour),
            "usd_per_day": _usd(per_day),
            "usd_per_request": _usd(per_request),
            "input_cost_share": _r(self.input_time_share(), 3),
            "usd_per_million_input_tokens": _usd(per_m_in),
            "usd_per_million_output_tokens": _usd(per_m_out),
        }


@dataclass
class ApiRow:
    """One closed API beside the self-hosted plan."""

    price: ApiPrice
    old: bool
    usd_per_request: float
    usd_per_day: float | None
    break_even_requests_per_day: float | None
    replica_capacity_requests_per_day: float | None

    @property
    def break_even_above_capacity(self) -> bool | None:
        """Whether one replica cannot even carry the break-even traffic (the API stays cheaper)."""
        if self.break_even_requests_per_day is None or not self.replica_capacity_requests_per_day:
            return None
        return self.break_even_requests_per_day > self.replica_capacity_requests_per_day

    def as_dict(self) -> dict[str, Any]:
        """One entry of `api_comparison`."""
        p = self.price
        return {
            "id": p.id,
            "provider": p.provider,
            "model": p.model,
            "usd_per_million_input_tokens": p.usd_per_million_input_tokens,
            "usd_per_million_output_tokens": p.usd_per_million_output_tokens,
            "as_of": p.as_of,
            "old": self.old,
            "source": p.source,
            "usd_per_request": _usd(self.usd_per_request),
            "usd_per_day": _usd(self.usd_per_day),
            "break_even_requests_per_day": _r(self.break_even_requests_per_day, 0),
            "replica_capacity_requests_per_day": _r(self.replica_capacity_requests_per_day, 0),
            "break_even_above_capacity": self.break_even_above_capacity,
        }


@dataclass
class Economics:
    """Everything `plan` says beyond memory and single-stream speed."""

    traffic_request: TrafficRequest
    load: LoadView
    traffic: TrafficPlan | None
    apis: list[ApiRow]
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The fields this adds to `plan --json` (docs/plan.md)."""
        t = self.traffic_request
        return {
            "load": self.load.as_dict(t.prompt_tokens, t.output_tokens),
            "traffic": self.traffic.as_dict() if self.traffic else None,
            "api_comparison": [a.as_dict() for a in self.apis],
        }


def option_with_slots(option: Option, profile: Profile, slots: int, cells_per_slot: int) -> Option:
    """`option` re-planned with `slots` slots of `cells_per_slot` cells each (same placement)."""
    s = option.settings
    ctx = cells_per_slot if s.ctx_is_per_slot else cells_per_slot * slots
    settings = replace(s, parallel=slots, ctx=ctx)
    return evaluate_option(option.facts, settings, profile, machine_spec(profile))


def max_slots_fitting(option: Option, profile: Profile, cells_per_slot: int) -> int:
    """Most slots of `cells_per_slot` cells that fit in memory (0: not even one)."""
    lo, hi, best = 1, MAX_PARALLEL, 0
    while lo <= hi:
        mid = (lo + hi) // 2
        if option_with_slots(option, profile, mid, cells_per_slot).fits:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def size_traffic(
    option: Option, profile: Profile, efficiency: Efficiency, t: TrafficRequest
) -> TrafficPlan | None:
    """The slot count (within memory) and replicas that carry the peak at the targets;
    None when not even one slot of prompt + output tokens fits."""
    cells = t.prompt_tokens + t.output_tokens
    most = max_slots_fitting(option, profile, cells)
    if most == 0:
        return None

    def at(slots: int) -> LoadPrediction:
        return predict_load(
            option_with_slots(option, profile, slots, cells),
            profile,
            slots=slots,
            prompt_tokens=t.prompt_tokens,
            output_tokens=t.output_tokens,
            efficiency=efficiency,
        )

    def meets(p: LoadPrediction) -> bool:
        return p.ttft_s <= t.max_ttft_s and p.per_stream_tokens_per_s >= t.min_stream_tokens_per_s

    loads = [at(b) for b in range(1, most + 1)]
    good = [p for p in loads if meets(p)]
    problems: list[str] = []
    if good:
        chosen = max(good, key=lambda p: p.requests_per_s)
    else:
        chosen = loads[0]
        if chosen.ttft_s > t.max_ttft_s:
            problems.append(
                f"a single slot's time to first token is {chosen.ttft_s:.2f} s, above "
                f"--max-ttft-s {t.max_ttft_s:g}"
            )
        if chosen.per_stream_tokens_per_s < t.min_stream_tokens_per_s:
            problems.append(
                f"a single stream runs at {chosen.per_stream_tokens_per_s:.1f} tokens/s, below "
                f"--min-stream-tokens-per-s {t.min_stream_tokens_per_s:g}"
            )
    peak = (t.requests_per_day or 0) / SECONDS_PER_DAY * t.peak_factor
    replicas = max(1, math.ceil(peak / chosen.requests_per_s - 1e-9))
    price = profile.price.usd_per_hour if profile.price else None
    return TrafficPlan(t, most, chosen, replicas, bool(good), price, problems)


def compare_apis(
    prices: list[ApiPrice],
    today: date,
    t: TrafficRequest,
    usd_per_hour: float | None,
    replica_requests_per_s: float,
) -> list[ApiRow]:
    """Each API's cost for the same requests, and the break-even against one replica."""
    rows = []
    capacity = replica_requests_per_s * SECONDS_PER_DAY / t.peak_factor
    for p in prices:
        per_request = p.usd_per_request(t.prompt_tokens, t.output_tokens)
        break_even = None
        if usd_per_hour is not None and per_request > 0:
            break_even = usd_per_hour * 24 / per_request
        rows.append(
            ApiRow(
                price=p,
                old=p.is_old(today),
                usd_per_request=per_request,
                usd_per_day=per_request * t.requests_per_day if t.requests_per_day else None,
                break_even_requests_per_day=break_even,
                replica_capacity_requests_per_day=capacity if usd_per_hour is not None else None,
            )
        )
    return rows


def plan_economics(
    result: PlanResult,
    *,
    calibrations: Calibrations,
    traffic: TrafficRequest,
    prices: list[ApiPrice],
    today: date,
) -> Economics:
    """Load at the planned slots, traffic sizing when asked, and the APIs beside them."""
    traffic.check()
    profile, chosen = result.profile, result.chosen
    key = CalibrationKey(profile.id, result.model, chosen.facts.quant, result.request.backend)
    efficiency = efficiency_for(profile, calibrations.lookup(key))
    slots = chosen.settings.parallel
    load = predict_load(
        chosen,
        profile,
        slots=slots,
        prompt_tokens=traffic.prompt_tokens,
        output_tokens=traffic.output_tokens,
        efficiency=efficiency,
    )
    price = profile.price.usd_per_hour if profile.price else None
    view = LoadView(load, chosen.settings.cells_per_stream, price)
    warnings: list[str] = []
    if traffic.prompt_tokens + traffic.output_tokens > view.slot_cells:
        warnings.append(
            f"a slot holds {view.slot_cells} cells, fewer than a request's "
            f"{traffic.prompt_tokens} + {traffic.output_tokens} tokens: raise --ctx or lower "
            "--parallel"
        )
    sized = None
    if traffic.requests_per_day is not None and result.fits:
        sized = size_traffic(chosen, profile, efficiency, traffic)
        if sized is None:
            warnings.append(
                f"not even one slot of {traffic.prompt_tokens + traffic.output_tokens} tokens "
                "fits next to the weights: no traffic sizing"
            )
        else:
            warnings.extend(f"traffic targets not met: {p}" for p in sized.problems)
    capacity_load = sized.load if sized else load
    apis = compare_apis(prices, today, traffic, price, capacity_load.requests_per_s)
    return Economics(traffic, view, sized, apis, warnings)


def plan_report(result: PlanResult, economics: Economics) -> dict[str, Any]:
    """The whole `plan --json` object: the plan's fields, then load, traffic and the APIs."""
    report = result.as_dict()
    report.update(economics.as_dict())
    report["warnings"] = [*report["warnings"], *economics.warnings]
    return report
