"""The sweep: a warm-up request, then each concurrency level in turn, closed-loop, until the
levels run out or one misses the latency target; the result as `bench --json` prints it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from deployer.core.bench.policy import LatencyTarget, best_level, costs
from deployer.core.bench.predict import Predictor, prediction_dict
from deployer.core.bench.samples import RequestSample
from deployer.core.bench.shapes import RequestShape
from deployer.core.bench.stats import LevelStats, level_stats
from deployer.core.errors import InvalidRequest

MAX_REQUESTS_PER_LEVEL = 100_000


@dataclass(frozen=True)
class LevelRun:
    """What a runner measured at one level (up to Ctrl-C, when interrupted)."""

    samples: list[RequestSample]
    interrupted: bool = False


class LoadRunner(Protocol):
    """Sends the requests (deployer.adapters.loadgen.HttpLoadRunner)."""

    def warm_up(self, shape: RequestShape) -> RequestSample:
        """One request whose figures are not counted."""
        ...

    def run_level(self, concurrency: int, requests: int, shape: RequestShape) -> LevelRun:
        """`concurrency` workers sending `requests` requests in all, each back to back."""
        ...


@dataclass(frozen=True)
class Target:
    """What is benched: a deployment or a URL, and what is known about its server."""

    label: str  # the deployment's name, or the URL
    endpoint: str
    model: str | None  # model id, for predictions and calibration (None: unknown)
    quant: str | None
    backend: str | None
    deployment: bool
    total_slots: int | None  # llama-server's /props
    ctx: int | None  # context cells a slot has (/props)
    profile_id: str | None
    usd_per_hour: float | None


@dataclass(frozen=True)
class SweepSpec:
    """How to sweep."""

    levels: list[int]
    requests: int  # per level (at least the level's concurrency)
    shape: RequestShape
    target: LatencyTarget
    timeout_s: float

    def __post_init__(self) -> None:
        check_counts(self.requests, self.timeout_s)


def check_counts(requests: int, timeout_s: float) -> None:
    """Refuse a request count or timeout no sweep can use."""
    if not 1 <= requests <= MAX_REQUESTS_PER_LEVEL:
        raise InvalidRequest(f"--requests {requests} is not in 1..{MAX_REQUESTS_PER_LEVEL}")
    if not 0 < timeout_s <= 86400:  # NaN fails too
        raise InvalidRequest(f"--timeout {timeout_s} is not in (0, 86400] seconds")


@dataclass
class BenchResult:
    """A sweep's measurements, with predictions and costs where known."""

    target: Target
    spec: SweepSpec
    measured_at: str
    warmup_error: str | None
    levels: list[LevelStats] = field(default_factory=list)
    missed: dict[int, list[str]] = field(default_factory=dict)
    predicted: dict[int, dict[str, Any]] = field(default_factory=dict)
    prediction_note: str = ""
    stopped: str = ""
    calibration: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        """Ctrl-C ended the sweep."""
        return any(lv.interrupted for lv in self.levels)

    @property
    def best(self) -> LevelStats | None:
        """The level with the most throughput under the latency target."""
        return best_level(self.levels, self.spec.target)

    @property
    def completed(self) -> int:
        """Requests that completed, over every level."""
        return sum(lv.completed for lv in self.levels)

    def errors(self) -> dict[str, int]:
        """Errors by kind, over every level."""
        out: dict[str, int] = {}
        for lv in self.levels:
            for kind, n in lv.errors.items():
                out[kind] = out.get(kind, 0) + n
        return dict(sorted(out.items()))

    def _level(self, lv: LevelStats) -> dict[str, Any]:
        usd = self.target.usd_per_hour
        return {
            **lv.as_dict(),
            "meets_target": not self.missed.get(lv.concurrency),
            "missed": self.missed.get(lv.concurrency, []),
            "costs": costs(lv.aggregate_tokens_per_s, lv.requests_per_s, usd).as_dict(),
            "predicted": self.predicted.get(lv.concurrency),
        }

    def as_dict(self) -> dict[str, Any]:
        """`deployer bench --json` (a contract: docs/bench.md lists every field)."""
        t, s, best = self.target, self.spec, self.best
        return {
            "target": {
                "name": t.label,
                "endpoint": t.endpoint,
                "deployment": t.deployment,
                "model": t.model,
                "quant": t.quant,
                "backend": t.backend,
            },
            "server": {"total_slots": t.total_slots, "ctx_per_slot": t.ctx},
            "profile": {"id": t.profile_id, "usd_per_hour": t.usd_per_hour},
            "shape": {
                "prompt_tokens": s.shape.prompt_tokens,
                "output_tokens": s.shape.output_tokens,
                "prompts": s.shape.source,
                "prompt_count": len(s.shape.prompts),
            },
            "requests_per_level": s.requests,
            "timeout_s": s.timeout_s,
            "latency_target": s.target.as_dict(),
            "measured_at": self.measured_at,
            "warmup_error": self.warmup_error,
            "levels": [self._level(lv) for lv in self.levels],
            "best": None if best is None else self._level(best),
            "errors": self.errors(),
            "stopped": self.stopped,
            "interrupted": self.interrupted,
            "prediction_note": self.prediction_note,
            "calibration": self.calibration,
            "warnings": self.warnings,
        }


def run_sweep(
    target: Target,
    spec: SweepSpec,
    runner: LoadRunner,
    *,
    measured_at: str,
    predictor: Predictor | None = None,
    on_level: Callable[[LevelStats, list[str]], None] | None = None,
) -> BenchResult:
    """Warm up, then run each level until one misses the target or Ctrl-C."""
    warm = runner.warm_up(spec.shape)
    result = BenchResult(target, spec, measured_at, warm.error if not warm.ok else None)
    result.stopped = "every level ran"
    for concurrency in spec.levels:
        run = runner.run_level(concurrency, max(spec.requests, concurrency), spec.shape)
        stats = level_stats(concurrency, run.samples, interrupted=run.interrupted)
        result.levels.append(stats)
        why = spec.target.broken_by(stats)
        result.missed[concurrency] = why
        if predictor is not None:
            result.predicted[concurrency] = prediction_dict(
                predictor.at(concurrency), predictor.output_tokens
            )
            result.prediction_note = predictor.note
        if on_level is not None:
            on_level(stats, why)
        if run.interrupted:
            result.stopped = f"interrupted at {concurrency} stream(s)"
            break
        if why:
            result.stopped = f"{concurrency} stream(s) missed the target: {'; '.join(why)}"
            break
    result.warnings += prompt_warnings(result.levels, spec.shape)
    return result


def prompt_warnings(levels: list[LevelStats], shape: RequestShape) -> list[str]:
    """A server that counts far fewer prompt tokens than a synthetic prompt holds is not
    reading the message (a chat template that drops it): its TTFT and prefill mean little."""
    counted = [lv.prompt_tokens for lv in levels if lv.prompt_tokens is not None]
    if shape.prompts or not counted or min(counted) >= shape.prompt_tokens / 2:
        return []
    return [
        f"the server counted {min(counted):.0f} prompt tokens for a prompt of about "
        f"{shape.prompt_tokens}: its chat template may drop the message (see its "
        "/apply-template), so TTFT and prefill are not measured on the prompt asked"
    ]
