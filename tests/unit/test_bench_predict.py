"""Predictions beside measurements, the calibration a sweep fits, and the report's escaping."""

from __future__ import annotations

import pytest

from deployer.cli import wiring
from deployer.core.bench.policy import LatencyTarget
from deployer.core.bench.predict import Predictor
from deployer.core.bench.report import report_html
from deployer.core.bench.run import BenchOptions, run_bench
from deployer.core.bench.samples import RequestSample, ServerTimings
from deployer.core.bench.shapes import RequestShape
from deployer.core.bench.stats import level_stats
from deployer.core.bench.sweep import LevelRun, Target
from deployer.core.fit.calibration import Calibration, CalibrationKey
from deployer.core.fit.throughput import Efficiency, efficiency_for
from deployer.core.hardware.profiles import get_profile
from tests.unit.in_memory import MemoryClock, MemoryRecordStore

PROFILE = "cpu-x86-2c-8gb"


def _predictor() -> Predictor:
    profile = get_profile(PROFILE)
    plan = wiring.plan_for("demo", profile, quant=None, ctx=8192, parallel=4, kv_type="f16",
                           backend="llamacpp")  # fmt: skip
    key = CalibrationKey(PROFILE, plan.model, plan.chosen.facts.quant, "llamacpp")
    return Predictor(plan.chosen, profile, key=key, calibration=None, prompt_tokens=128,
                     output_tokens=64)  # fmt: skip


class MemoryCalibrations:
    def __init__(self) -> None:
        self.kept: list[Calibration] = []

    def lookup(self, key: CalibrationKey) -> Calibration | None:
        return next((c for c in reversed(self.kept) if c.key == key), None)

    def remember(self, calibration: Calibration) -> None:
        self.kept.append(calibration)


def _one_stream(decode_tps: float, prefill_tps: float) -> RequestSample:
    t = ServerTimings(prompt_n=128, prompt_ms=128 / prefill_tps * 1000,
                      prompt_per_second=prefill_tps, predicted_per_second=decode_tps)  # fmt: skip
    times = tuple(0.5 + i / decode_tps for i in range(64))
    return RequestSample(0.0, times[-1], times[0], times, 64, 128, t)


class OneLevel:
    def __init__(self, sample: RequestSample) -> None:
        self.sample = sample

    def warm_up(self, shape: RequestShape) -> RequestSample:
        return self.sample

    def run_level(self, concurrency: int, requests: int, shape: RequestShape) -> LevelRun:
        return LevelRun([self.sample] * requests)


def _target() -> Target:
    return Target("web", "http://127.0.0.1:18080", "demo", "Q4_K_M", "llamacpp", True, 4, 2048,
                  PROFILE, 0.1)  # fmt: skip


def _bench(predictor: Predictor, cals: MemoryCalibrations, sample: RequestSample) -> object:
    options = BenchOptions([1], 2, RequestShape(128, 64), LatencyTarget(), 10.0)
    return run_bench(_target(), options, OneLevel(sample), predictor=predictor,
                     records=MemoryRecordStore(), calibrations=cals, clock=MemoryClock())  # fmt: skip


def test_predictions_sit_beside_measurements() -> None:
    predictor = _predictor()
    out = _bench(predictor, MemoryCalibrations(), _one_stream(40.0, 300.0))
    predicted = out.result.as_dict()["levels"][0]["predicted"]  # type: ignore[attr-defined]
    assert predicted is not None and predicted["aggregate_tokens_per_s"] > 0
    assert predicted["ttft_s"] > 0 and predicted["e2e_s"] >= predicted["ttft_s"]
    # What a level measures (output tokens over wall time) includes each request's prefill:
    # the delivered rate, below the rate while every slot decodes.
    delivered = predicted["delivered_tokens_per_s"]
    assert delivered == pytest.approx(predicted["requests_per_s"] * 64, rel=1e-3)
    assert delivered < predicted["aggregate_tokens_per_s"]


def test_the_calibration_reproduces_what_one_stream_measured() -> None:
    predictor = _predictor()
    default = efficiency_for(predictor.profile, None)
    at_default = predictor._predict(1, default, 128)
    # measured at 80% of the default prediction's decode and 60% of its prefill
    decode, prefill = (
        0.8 * at_default.per_stream_tokens_per_s,
        0.6 * at_default.prefill_tokens_per_s,
    )
    cals = MemoryCalibrations()
    out = _bench(predictor, cals, _one_stream(decode, prefill))
    assert out.calibration_line == f"calibration saved: plan on {PROFILE} now uses it"  # type: ignore[attr-defined]
    (cal,) = cals.kept
    # prefill is compute alone: its efficiency scales with the measured speed
    assert cal.compute_efficiency == pytest.approx(default.compute * 0.6, rel=1e-3)
    # and the fitted pair predicts the measured one-stream decode and prefill speeds
    refit = Efficiency(cal.memory_efficiency, cal.compute_efficiency, "fit")
    again = predictor._predict(1, refit, 128)
    assert again.per_stream_tokens_per_s == pytest.approx(decode, rel=1e-3)
    assert again.prefill_tokens_per_s == pytest.approx(prefill, rel=1e-3)
    assert cal.memory_efficiency < default.memory  # slower decode: less of the bandwidth
    assert cal.key == predictor.key and cal.measured_on == "2025-01-01"


def test_the_report_escapes_every_value() -> None:
    hostile = '<script>alert(1)</script>"&'
    lv = level_stats(1, [RequestSample(0.0, 1.0, error=hostile)])
    target = Target(hostile, "http://h", hostile, None, None, False, None, None, None, None)
    options = BenchOptions([1], 1, RequestShape(8, 8, source=hostile), LatencyTarget(), 5.0)
    runner = OneLevel(RequestSample(0.0, 1.0, error=hostile))
    out = run_bench(target, options, runner, predictor=None, records=MemoryRecordStore(),
                    calibrations=None, clock=MemoryClock())  # fmt: skip
    page = report_html(out.result.as_dict())
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert lv.errors == {hostile: 1}
    assert page.count("<svg") == 1 and "http://www.w3.org/2000/svg" in page


def test_a_prefill_too_short_to_measure_keeps_the_default_compute_efficiency() -> None:
    predictor = _predictor()
    default = efficiency_for(predictor.profile, None)
    short = _one_stream(40.0, 90.0)
    short = RequestSample(short.start_s, short.end_s, short.first_token_s, short.token_times_s,
                          64, 3, ServerTimings(3, 33.0, 90.0, 40.0))  # fmt: skip
    cals = MemoryCalibrations()
    out = _bench(predictor, cals, short)
    (cal,) = cals.kept
    assert cal.compute_efficiency == pytest.approx(default.compute, rel=1e-3)
    assert "kept at the default" in out.calibration_line  # type: ignore[attr-defined]
