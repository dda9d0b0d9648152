"""Confidence intervals against hand computations; percentiles; busy time; winners; cost."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployer.core.eval.cost import Pricing, pricing_for, usd_per_item
from deployer.core.eval.items import parse_items
from deployer.core.eval.runbook import ItemResult
from deployer.core.eval.stats import (
    bootstrap_mean,
    busy_seconds,
    percentile,
    score_interval,
    wilson,
)
from deployer.core.eval.summary import summarize
from deployer.core.eval.targets import parse_target


def test_wilson_by_hand_8_of_10() -> None:
    # p = 0.8, n = 10, z = 1.96: z^2 = 3.8416; denominator 1 + 0.38416 = 1.38416;
    # centre (0.8 + 0.19208) / 1.38416 = 0.716737; half-width
    # 1.96 * sqrt(0.8 * 0.2 / 10 + 3.8416 / 400) / 1.38416 = 1.96 * 0.160012 / 1.38416 = 0.226578
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.716737 - 0.226578, abs=1e-4)
    assert high == pytest.approx(0.716737 + 0.226578, abs=1e-4)


def test_wilson_at_the_edges_stays_inside_0_1() -> None:
    # 0 of 5: the lower end is 0 and the upper z^2 / (n + z^2) = 3.8415 / 8.8415 = 0.4345
    assert wilson(0, 5) == pytest.approx((0.0, 0.4345), abs=1e-4)
    assert wilson(5, 5) == pytest.approx((0.5655, 1.0), abs=1e-4)


@given(
    st.integers(min_value=1, max_value=500).flatmap(
        lambda n: st.tuples(st.integers(0, n), st.just(n))
    )
)
def test_wilson_holds_the_observed_share(case: tuple[int, int]) -> None:
    k, n = case
    low, high = wilson(k, n)
    assert 0 <= low <= k / n <= high <= 1


def test_wilson_narrows_with_more_items() -> None:
    small, large = wilson(8, 10), wilson(80, 100)
    assert large[1] - large[0] < small[1] - small[0]


def test_interval_method_follows_the_scores() -> None:
    iv = score_interval([1.0, 0.0, 1.0, 1.0])
    assert iv is not None and iv.method == "wilson"
    assert (iv.low, iv.high) == pytest.approx(wilson(3, 4))
    partial = score_interval([1.0, 0.5, 0.0, 1.0, 0.5])
    assert partial is not None and partial.method == "bootstrap"
    assert partial.low <= 0.6 <= partial.high
    assert score_interval([]) is None


def test_bootstrap_is_repeatable_and_collapses_on_constant_data() -> None:
    values = [0.5, 1.0, 0.0, 0.25, 0.75, 1.0]
    assert bootstrap_mean(values) == bootstrap_mean(values)
    assert bootstrap_mean([0.5] * 7) == (0.5, 0.5)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentile(values, 50) == 10.0  # ceil(0.5 * 20) = 10th smallest
    assert percentile(values, 95) == 19.0  # ceil(0.95 * 20) = 19th
    assert percentile([3.0], 95) == 3.0
    assert percentile([], 50) is None


def test_busy_seconds_is_the_union_of_intervals() -> None:
    assert busy_seconds([(0, 2), (1, 3), (10, 11)]) == 4  # [0,3] and [10,11]
    assert busy_seconds([(5, 6), (0, 1)]) == 2
    assert busy_seconds([]) == 0


@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 10)), max_size=30))
def test_busy_seconds_bounds(raw: list[tuple[float, float]]) -> None:
    intervals = [(s, s + d) for s, d in raw]
    busy = busy_seconds(intervals)
    assert busy <= sum(d for _, d in raw) + 1e-9
    assert busy >= max((d for _, d in raw), default=0) - 1e-9


def test_api_cost_per_item_by_hand() -> None:
    pricing = Pricing("tokens", price_in=0.15, price_out=0.60)
    # 3 items: 1000 tokens in and 300 out in all: (1000 * 0.15 + 300 * 0.60) / 1e6 / 3
    got = usd_per_item(pricing, answered=3, tokens_in=1000, tokens_out=300, busy_s=99)
    assert got == pytest.approx((150 + 180) / 1e6 / 3)


def test_self_hosted_cost_per_item_by_hand() -> None:
    pricing = Pricing("hourly", hourly=0.096)
    got = usd_per_item(pricing, answered=4, tokens_in=1, tokens_out=1, busy_s=30)
    assert got == pytest.approx(0.096 * 30 / 3600 / 4)
    assert usd_per_item(pricing, answered=0, tokens_in=0, tokens_out=0, busy_s=0) is None


def test_pricing_sources() -> None:
    api = parse_target("url=https://api.example.com/v1,model=m,price-in=1,price-out=2")
    assert pricing_for(api, 0.5) == Pricing("tokens", 1.0, 2.0, source="target price-in/price-out")
    unpriced = parse_target("url=https://api.example.com/v1,model=m")
    assert pricing_for(unpriced, 0.5).basis == "none"  # a profile's price is not an API's
    dep = parse_target("my-dep")
    assert pricing_for(dep, 0.5) == Pricing("hourly", hourly=0.5, source="profile price")
    own = parse_target("deployment=my-dep,hourly=2")
    assert pricing_for(own, 0.5).hourly == 2.0
    assert math.isclose(pricing_for(parse_target("model=demo"), 0.1).hourly or 0, 0.1)


def test_a_closed_api_model_is_priced_from_the_price_table() -> None:
    # The shipped table lists gpt-4o-mini among its row's api_models.
    api = parse_target("url=https://api.example.com/v1,model=gpt-4o-mini")
    p = pricing_for(api, None)
    assert (p.basis, p.source) == ("tokens", "price table")
    assert (p.price_in, p.price_out) == (0.15, 0.6)
    own = parse_target("url=https://api.example.com/v1,model=gpt-4o-mini,price-in=1,price-out=2")
    assert pricing_for(own, None).price_in == 1.0  # the target's own price comes first


def test_answers_without_usage_are_not_priced_as_free() -> None:
    # Two answers reported 1000 tokens in and 100 out each; two reported no usage at all. The
    # per-token price is for the metered two, and the other two are counted, not taken as $0.
    data = parse_items(
        "\n".join(f'{{"id": "q{i}", "prompt": "p", "expect": [{{"type": "contains", "value": "x"}}]}}'
                  for i in range(4)), "d.jsonl", "ab" * 32)  # fmt: skip
    api = parse_target("url=https://api.example.com/v1,model=m,price-in=1,price-out=10")
    usage = {"q0": (1000, 100), "q1": (1000, 100), "q2": (None, None), "q3": (None, 5)}
    results = {
        ("api.example.com/m", q): ItemResult("api.example.com/m", q, True, answer="x",
                                             tokens_in=tin, tokens_out=tout)
        for q, (tin, tout) in usage.items()
    }  # fmt: skip
    s = summarize(api, data, results, pricing_for(api, None))
    assert s.usd_per_item == pytest.approx((1000 * 1 + 100 * 10) / 1e6)
    assert s.as_json()["answered_without_usage"] == 2
    none = {k: replace(r, tokens_in=None, tokens_out=None) for k, r in results.items()}
    assert summarize(api, data, none, pricing_for(api, None)).usd_per_item is None


def test_a_self_hosted_target_pays_for_the_time_its_failed_requests_held_the_machine() -> None:
    # Two answers of 10 s each, then a request that timed out after 30 s: the machine was held
    # for 50 s, and the two answered items share that cost.
    data = parse_items(
        "\n".join(f'{{"id": "q{i}", "prompt": "p", "expect": [{{"type": "contains", "value": "x"}}]}}'
                  for i in range(3)), "d.jsonl", "ab" * 32)  # fmt: skip
    own = parse_target("url=http://127.0.0.1:9/v1,model=m,name=own,hourly=3.6")
    spans = {"q0": (True, 0.0, 10.0), "q1": (True, 10.0, 20.0), "q2": (False, 20.0, 50.0)}
    results = {
        ("own", q): ItemResult("own", q, ok, answer="x" if ok else None,
                               error_kind=None if ok else "timeout", started=a, ended=b)
        for q, (ok, a, b) in spans.items()
    }  # fmt: skip
    s = summarize(own, data, results, pricing_for(own, None))
    assert s.busy_s == pytest.approx(50.0)
    assert s.usd_per_item == pytest.approx(3.6 * 50 / 3600 / 2)
