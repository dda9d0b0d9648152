"""After a sweep: the summary a deployment's record keeps, and the calibration `plan` uses."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from deployer.core.bench.predict import Predictor
from deployer.core.bench.stats import LevelStats
from deployer.core.bench.sweep import BenchResult
from deployer.core.fit.calibration import Calibrations
from deployer.core.state.store import RecordStore


def _headline(result: BenchResult) -> LevelStats | None:
    """The best level under the target, else the one with the most throughput."""
    best = result.best
    if best is not None:
        return best
    ran = [lv for lv in result.levels if lv.completed > 0]
    return max(ran, key=lambda lv: lv.aggregate_tokens_per_s, default=None)


def bench_summary(result: BenchResult) -> dict[str, Any] | None:
    """The record's `bench` field (checked by record_fields on reading); None: nothing measured."""
    lv = _headline(result)
    if lv is None:
        return None
    return {
        "measured_at": result.measured_at,
        "concurrency": lv.concurrency,
        "meets_target": lv is result.best,
        "aggregate_tokens_per_s": round(lv.aggregate_tokens_per_s, 3),
        "requests_per_s": round(lv.requests_per_s, 4),
        "stream_tokens_per_s": None
        if lv.stream_tokens_per_s is None
        else round(lv.stream_tokens_per_s, 3),
        "ttft_p95_s": None if lv.ttft.p95 is None else round(lv.ttft.p95, 6),
        "e2e_p95_s": None if lv.e2e.p95 is None else round(lv.e2e.p95, 6),
        "prompt_tokens": result.spec.shape.prompt_tokens,
        "output_tokens": result.spec.shape.output_tokens,
        "errors": sum(x.error_count for x in result.levels),
    }


def keep_in_record(result: BenchResult, records: RecordStore) -> bool:
    """Save the summary into the deployment's record; False when there is none to keep it
    (a URL, an interrupted sweep, nothing completed, or the deployment went meanwhile)."""
    summary = bench_summary(result)
    if not result.target.deployment or result.interrupted or summary is None:
        return False
    record = records.load(result.target.label)  # read again: it may have changed meanwhile
    if record is None or record.endpoint != result.target.endpoint:
        return False
    records.save(replace(record, bench=summary))
    return True


def calibrate(
    result: BenchResult,
    predictor: Predictor | None,
    calibrations: Calibrations | None,
    *,
    today: str,
) -> str | None:
    """Fit and remember a calibration from the 1-stream level; the line to print, if any."""
    if predictor is None or result.interrupted or not result.target.deployment:
        return None
    one = next((lv for lv in result.levels if lv.concurrency == 1), None)
    if one is None:
        return "no calibration: the sweep had no 1-stream level"
    fit = predictor.fit(one, today, result.target.label)
    if fit.calibration is None:
        result.calibration = {"saved": False, "note": fit.note}
        return f"no calibration: {fit.note}"
    cal = fit.calibration
    if calibrations is None:
        result.calibration = {"saved": False, "note": "no calibration store yet"}
        return "no calibration: no calibration store yet"
    calibrations.remember(cal)
    result.calibration = {
        "saved": True,
        "profile": cal.key.profile,
        "model": cal.key.model,
        "quant": cal.key.quant,
        "backend": cal.key.backend,
        "memory_efficiency": cal.memory_efficiency,
        "compute_efficiency": cal.compute_efficiency,
        "measured_on": cal.measured_on,
    }
    return fit.note
