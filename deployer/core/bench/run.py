"""The bench use case: sweep, then (unless asked not to) calibrate and keep the summary in the
deployment's record. The CLI calls run_bench once; every edge arrives as a parameter."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from deployer.core.bench.keep import calibrate, keep_in_record
from deployer.core.bench.policy import LatencyTarget
from deployer.core.bench.predict import Predictor
from deployer.core.bench.shapes import RequestShape
from deployer.core.bench.stats import LevelStats
from deployer.core.bench.sweep import BenchResult, LoadRunner, SweepSpec, Target, run_sweep
from deployer.core.clock import Clock
from deployer.core.errors import BenchFailed
from deployer.core.fit.calibration import Calibrations
from deployer.core.state.records import iso_seconds
from deployer.core.state.store import RecordStore


@dataclass(frozen=True)
class BenchOptions:
    """What the flags asked for, once the levels are known."""

    levels: list[int]
    requests: int
    shape: RequestShape
    goal: LatencyTarget
    timeout_s: float
    save: bool = True


@dataclass
class BenchOutcome:
    """The result and what was kept of it."""

    result: BenchResult
    kept_in_record: bool
    calibration_line: str | None

    def raise_if_failed(self) -> None:
        """Ctrl-C: KeyboardInterrupt (exit 130); nothing completed: BenchFailed."""
        if self.result.interrupted:
            raise KeyboardInterrupt
        if self.result.completed == 0:
            raise BenchFailed(self.result.target.label, self.result.errors())


def run_bench(
    target: Target,
    options: BenchOptions,
    runner: LoadRunner,
    *,
    predictor: Predictor | None,
    records: RecordStore,
    calibrations: Calibrations | None,
    clock: Clock,
    on_level: Callable[[LevelStats, list[str]], None] | None = None,
) -> BenchOutcome:
    """Sweep `target`; keep the summary and the calibration when `options.save`."""
    spec = SweepSpec(options.levels, options.requests, options.shape, options.goal,
                     options.timeout_s)  # fmt: skip
    measured_at = iso_seconds(clock.utc_now())
    result = run_sweep(
        target, spec, runner, measured_at=measured_at, predictor=predictor, on_level=on_level
    )
    if not options.save:
        return BenchOutcome(result, False, None)
    line = calibrate(result, predictor, calibrations, today=measured_at[:10])
    return BenchOutcome(result, keep_in_record(result, records), line)
