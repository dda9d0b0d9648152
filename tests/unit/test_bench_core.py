"""deployer bench's pure parts: percentiles, level figures, levels and the latency target,
request shapes and prompts files, the sweep over an in-memory runner, and what is kept."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployer.core.bench.keep import bench_summary, keep_in_record
from deployer.core.bench.policy import (
    LatencyTarget,
    best_level,
    costs,
    default_levels,
    parse_levels,
)
from deployer.core.bench.run import BenchOptions, run_bench
from deployer.core.bench.samples import RequestSample, ServerTimings
from deployer.core.bench.shapes import RequestShape, parse_prompts, synthetic_prompt
from deployer.core.bench.stats import level_stats, percentile
from deployer.core.bench.sweep import LevelRun, Target, prompt_warnings
from deployer.core.bench.target import endpoint_of
from deployer.core.errors import BenchFailed, InvalidRequest, StateFileInvalid
from deployer.core.state.records import DeploymentRecord, record_from_dict
from tests.unit.in_memory import MemoryClock, MemoryRecordStore

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@given(st.lists(finite, min_size=1, max_size=50), st.floats(min_value=0, max_value=100))
def test_percentile_is_numpys_linear_percentile(values: list[float], q: float) -> None:
    got = percentile(values, q)
    assert got is not None
    assert math.isclose(got, float(np.percentile(values, q)), rel_tol=1e-9, abs_tol=1e-6)


def test_percentile_of_nothing_is_none_and_q_is_checked() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def _ok(start: float, ttft: float, gap: float, n: int, **kw: object) -> RequestSample:
    times = tuple(start + ttft + i * gap for i in range(n))
    return RequestSample(start_s=start, end_s=times[-1] + 0.001, first_token_s=times[0],
                         token_times_s=times, output_tokens=n, **kw)  # type: ignore[arg-type]  # fmt: skip


def test_level_figures_from_samples() -> None:
    samples = [_ok(0.0, 0.1, 0.02, 11), _ok(0.0, 0.3, 0.04, 11),
               RequestSample(0.5, 0.6, error="http_503")]  # fmt: skip
    lv = level_stats(2, samples)
    assert lv.requests == 3 and lv.completed == 2 and lv.errors == {"http_503": 1}
    assert lv.output_tokens == 22
    assert math.isclose(lv.wall_s, 0.3 + 0.4 + 0.001)
    assert math.isclose(lv.aggregate_tokens_per_s, 22 / lv.wall_s)
    assert math.isclose(lv.stream_tokens_per_s or 0, (50 + 25) / 2)  # 10 tokens in 0.2 s / 0.4 s
    assert lv.ttft.p50 is not None and math.isclose(lv.ttft.p50, 0.2)
    assert lv.inter_token.p50 is not None and lv.inter_token.p50 == pytest.approx(0.03, abs=0.011)
    p = [lv.e2e.p50, lv.e2e.p95, lv.e2e.p99]
    assert None not in p and p == sorted(p)  # type: ignore[type-var]


def test_server_timings_are_preferred_for_prefill() -> None:
    t = ServerTimings(prompt_n=100, prompt_ms=50.0, prompt_per_second=2000.0,
                      predicted_per_second=40.0)  # fmt: skip
    lv = level_stats(1, [_ok(0.0, 0.5, 0.02, 5, prompt_tokens=100, timings=t)])
    assert lv.prefill_tokens_per_s == 2000.0 and lv.server_stream_tokens_per_s == 40.0
    lv2 = level_stats(1, [_ok(0.0, 0.5, 0.02, 5, prompt_tokens=100)])
    assert lv2.prefill_tokens_per_s == pytest.approx(200.0)  # prompt / ttft


def test_a_completed_answer_without_output_is_an_error() -> None:
    lv = level_stats(1, [RequestSample(0.0, 1.0, error=None)])
    assert lv.completed == 0 and lv.errors == {"empty": 1} and lv.aggregate_tokens_per_s == 0


def test_default_levels_double_up_to_the_slots() -> None:
    assert default_levels(1) == [1]
    assert default_levels(4) == [1, 2, 4]
    assert default_levels(6) == [1, 2, 4, 6]
    with pytest.raises(InvalidRequest):
        default_levels(0)


@pytest.mark.parametrize("text", ["", "1,,2", "2,1", "1,1", "0", "1,x", "-1", "1.5", "2000"])
def test_bad_concurrency_lists_are_refused(text: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_levels(text)


def test_good_concurrency_list() -> None:
    assert parse_levels("1, 2,8") == [1, 2, 8]


def test_latency_target_says_why_a_level_misses() -> None:
    slow = level_stats(1, [_ok(0.0, 3.0, 0.5, 5)])
    assert LatencyTarget(max_ttft_s=10, min_stream_tokens_per_s=1).broken_by(slow) == []
    why = LatencyTarget(max_ttft_s=1, min_stream_tokens_per_s=5, max_e2e_s=2).broken_by(slow)
    assert len(why) == 3 and "TTFT" in why[0]
    broken = level_stats(1, [RequestSample(0, 1, error="timeout")])
    assert LatencyTarget().broken_by(broken) == ["no request completed"]
    with pytest.raises(InvalidRequest):
        LatencyTarget(max_ttft_s=-1)
    with pytest.raises(InvalidRequest):
        LatencyTarget(min_stream_tokens_per_s=float("nan"))


def test_best_level_is_the_fastest_that_meets_the_target() -> None:
    a = level_stats(1, [_ok(0.0, 0.1, 0.02, 11)])
    b = level_stats(2, [_ok(0.0, 0.1, 0.02, 11), _ok(0.0, 0.1, 0.02, 11)])
    c = level_stats(4, [_ok(0.0, 1.0, 0.005, 200) for _ in range(4)])  # faster, later first token
    assert best_level([a, b, c], LatencyTarget()) is c
    assert best_level([a, b, c], LatencyTarget(max_ttft_s=0.5)) is b


def test_costs_at_a_price() -> None:
    c = costs(100.0, 2.0, 3.6)
    assert c.usd_per_million_output_tokens == pytest.approx(10.0)
    assert c.usd_per_request == pytest.approx(0.0005)
    assert c.requests_per_day == pytest.approx(172800)
    assert costs(0.0, 0.0, None).usd_per_million_output_tokens is None


def test_synthetic_prompts_differ_from_the_first_word_and_have_the_length() -> None:
    a, b = synthetic_prompt(0, 128), synthetic_prompt(1, 128)
    assert a.split()[:2] != b.split()[:2]
    assert 120 <= len(a.split()) <= 130
    body = RequestShape(128, 64).body(3, "m")
    assert body["max_tokens"] == 64 and body["stream"] and body["temperature"] == 0
    assert body["stream_options"] == {"include_usage": True} and body["ignore_eos"] is True


def test_prompts_file_lines() -> None:
    text = '{"prompt": "hi"}\n\n{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}\n'
    prompts = parse_prompts(text, "p.jsonl")
    shape = RequestShape(1, 8, prompts, "p.jsonl")
    assert shape.messages(0) == [{"role": "user", "content": "hi"}]
    assert shape.messages(3)[1] == {"role": "user", "content": "u"}


@pytest.mark.parametrize(
    "line",
    ["[1]", "{}", '{"prompt": ""}', '{"prompt": 3}', '{"prompt": "a", "x": 1}', "not json",
     '{"messages": []}', '{"messages": [{"role": "tool", "content": "x"}]}',
     '{"messages": [{"role": "user"}]}', '{"messages": "x"}', "[" * 100000],
)  # fmt: skip
def test_bad_prompt_lines_are_refused_in_one_line(line: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_prompts(line, "p.jsonl")
    assert "p.jsonl" in err.value.message() and "\n" not in err.value.message()


def test_an_empty_prompts_file_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        parse_prompts("\n\n", "p.jsonl")


@pytest.mark.parametrize(
    ("text", "want"),
    [("http://127.0.0.1:8080", "http://127.0.0.1:8080"), ("https://h.example/v1/", "https://h.example"),
     ("http://[::1]:9000/", "http://[::1]:9000")],
)  # fmt: skip
def test_urls(text: str, want: str) -> None:
    assert endpoint_of(text) == want


@pytest.mark.parametrize(
    "text", ["ftp://h", "http://u:p@h", "http://h?x=1", "http://h:99999", "http://", "http://h#f"]
)
def test_bad_urls_are_refused(text: str) -> None:
    with pytest.raises(InvalidRequest):
        endpoint_of(text)


class ScriptedRunner:
    """An in-memory LoadRunner: the server's answers are the test's script (the HTTP edge)."""

    def __init__(self, speed: dict[int, float], fail: bool = False) -> None:
        self.speed, self.fail = speed, fail
        self.levels_run: list[int] = []

    def warm_up(self, shape: RequestShape) -> RequestSample:
        return _ok(0.0, 0.1, 0.02, 3)

    def run_level(self, concurrency: int, requests: int, shape: RequestShape) -> LevelRun:
        self.levels_run.append(concurrency)
        if self.fail:
            return LevelRun([RequestSample(0.0, 0.1, error="http_401")] * requests)
        gap, n = 1 / self.speed[concurrency], shape.output_tokens
        free_at = [0.0] * concurrency  # closed loop: each worker sends when its last answer ends
        out = []
        for i in range(requests):
            sample = _ok(free_at[i % concurrency], 0.1, gap, n)
            free_at[i % concurrency] = sample.end_s
            out.append(sample)
        return LevelRun(out)


def _target(**kw: object) -> Target:
    base: dict[str, object] = dict(
        label="web", endpoint="http://127.0.0.1:18080", model="demo", quant="Q4_K_M",
        backend="llamacpp", deployment=True, total_slots=4, ctx=2048, profile_id=None,
        usd_per_hour=None,
    )  # fmt: skip
    base.update(kw)
    return Target(**base)  # type: ignore[arg-type]


def _record() -> DeploymentRecord:
    return DeploymentRecord(name="web", model="demo", quant="Q4_K_M", backend="llamacpp",
                            runtime="container", endpoint="http://127.0.0.1:18080", port=18080,
                            created_at="2025-01-01T00:00:00+00:00")  # fmt: skip


def _options(levels: list[int], **kw: object) -> BenchOptions:
    base: dict[str, object] = dict(levels=levels, requests=4, shape=RequestShape(16, 8),
                                   goal=LatencyTarget(), timeout_s=10.0)  # fmt: skip
    base.update(kw)
    return BenchOptions(**base)  # type: ignore[arg-type]


def test_the_sweep_stops_at_the_first_level_that_misses_and_keeps_the_best() -> None:
    runner = ScriptedRunner({1: 40.0, 2: 30.0, 4: 3.0, 8: 2.0})
    records = MemoryRecordStore({"web": _record()})
    out = run_bench(_target(), _options([1, 2, 4, 8]), runner, predictor=None, records=records,
                    calibrations=None, clock=MemoryClock())  # fmt: skip
    assert runner.levels_run == [1, 2, 4]  # 4 streams at 3 tok/s each missed; 8 never ran
    assert "4 stream(s) missed" in out.result.stopped
    doc = out.result.as_dict()
    assert doc["best"]["concurrency"] == 2 and doc["levels"][2]["meets_target"] is False
    assert out.kept_in_record
    kept = records.records["web"].bench
    assert kept is not None and kept["concurrency"] == 2 and kept["meets_target"] is True
    json.dumps(doc)  # JSON-ready
    out.raise_if_failed()


def test_nothing_completed_is_one_error_and_nothing_is_kept() -> None:
    records = MemoryRecordStore({"web": _record()})
    out = run_bench(_target(), _options([1, 2]), ScriptedRunner({}, fail=True), predictor=None,
                    records=records, calibrations=None, clock=MemoryClock())  # fmt: skip
    assert out.result.errors() == {"http_401": 4} and not out.kept_in_record
    assert records.records["web"].bench is None
    with pytest.raises(BenchFailed) as err:
        out.raise_if_failed()
    assert "http_401 x4" in err.value.message() and "API key" in err.value.message()


def test_a_url_or_no_save_keeps_nothing() -> None:
    records = MemoryRecordStore({"web": _record()})
    for target, save in ((_target(deployment=False), True), (_target(), False)):
        out = run_bench(target, _options([1], save=save), ScriptedRunner({1: 40.0}),
                        predictor=None, records=records, calibrations=None, clock=MemoryClock())  # fmt: skip
        assert not out.kept_in_record
    assert records.records["web"].bench is None


def test_bench_summary_round_trips_through_the_record_checks() -> None:
    runner = ScriptedRunner({1: 40.0})
    out = run_bench(_target(), _options([1], save=False), runner, predictor=None,
                    records=MemoryRecordStore(), calibrations=None, clock=MemoryClock())  # fmt: skip
    summary = bench_summary(out.result)
    assert summary is not None
    raw = {**_record().as_dict(), "bench": summary, "profile": "cpu-x86-2c-8gb"}
    back = record_from_dict(json.loads(json.dumps(raw)))
    assert back.bench == summary and back.profile == "cpu-x86-2c-8gb"


def test_old_records_without_the_new_fields_still_load() -> None:
    raw = _record().as_dict()
    del raw["bench"], raw["profile"]
    assert record_from_dict(raw).bench is None


@pytest.mark.parametrize(
    "change",
    [{"concurrency": -1}, {"aggregate_tokens_per_s": float("nan")}, {"extra": 1},
     {"aggregate_tokens_per_s": 1e12}, {"meets_target": "yes"}, {"measured_at": "a\nb"},
     {"ttft_p95_s": "1"}],
)  # fmt: skip
def test_a_bad_bench_summary_makes_the_record_invalid(change: dict[str, object]) -> None:
    out = run_bench(_target(), _options([1], save=False), ScriptedRunner({1: 40.0}),
                    predictor=None, records=MemoryRecordStore(), calibrations=None,
                    clock=MemoryClock())  # fmt: skip
    summary = {**(bench_summary(out.result) or {}), **change}
    with pytest.raises(StateFileInvalid):
        record_from_dict({**_record().as_dict(), "bench": summary})
    with pytest.raises(StateFileInvalid):
        record_from_dict({**_record().as_dict(), "profile": "Not An Id"})


def test_a_deployment_replaced_meanwhile_is_not_written() -> None:
    records = MemoryRecordStore({"web": replace(_record(), endpoint="http://127.0.0.1:18081",
                                                port=18081)})  # fmt: skip
    out = run_bench(_target(), _options([1], save=False), ScriptedRunner({1: 40.0}),
                    predictor=None, records=records, calibrations=None, clock=MemoryClock())  # fmt: skip
    assert not keep_in_record(out.result, records)


def test_a_server_that_drops_the_prompt_is_warned_about() -> None:
    shape = RequestShape(128, 8)
    dropped = level_stats(1, [_ok(0.0, 0.1, 0.02, 8, prompt_tokens=3)])
    read = level_stats(1, [_ok(0.0, 0.1, 0.02, 8, prompt_tokens=131)])
    assert "counted 3 prompt tokens" in prompt_warnings([dropped], shape)[0]
    assert prompt_warnings([read], shape) == []
    assert prompt_warnings([dropped], RequestShape(128, 8, (((("user", "x"),),)))) == []


def test_a_deployment_on_a_detected_machine_is_benched_on_that_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # deploy --detect records an ad-hoc 'detected-...' id that no profile file holds: bench
    # must take this machine's detected profile for it, not refuse it as unknown.
    from deployer.cli import bench_setup, wiring
    from deployer.core.hardware.profiles import get_profile

    here = get_profile("cpu-x86-2c-8gb").model_copy(update={"id": "detected-cpu-2c-24gb"})
    monkeypatch.setattr(wiring, "pick_profile", lambda profile_id, detect: here)
    rec = DeploymentRecord("d", "demo", "Q4_K_M", "llamacpp", "container",
                           "http://127.0.0.1:8080", 8080, "2026-01-01T00:00:00+00:00",
                           profile="detected-cpu-2c-24gb")  # fmt: skip
    notes: list[str] = []
    assert bench_setup._profile(rec, None, False, notes) is here and notes == []
    shipped = replace(rec, profile="cpu-x86-4c-16gb")
    picked = bench_setup._profile(shipped, None, False, notes)
    assert picked is not None and picked.id == "cpu-x86-4c-16gb"
    gone = replace(rec, profile="no-such-profile")
    assert bench_setup._profile(gone, None, False, notes) is here
    assert notes and "no-such-profile" in notes[0] and "this machine's is used" in notes[0]
