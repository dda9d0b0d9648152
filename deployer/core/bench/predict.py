"""Predicted figures beside measured ones, and the calibration a sweep's first level gives.

Both go through deployer.core.fit.throughput, the model `plan` uses: what bench predicts for a
level is what `plan --parallel N` would say for the same request shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deployer.core.bench.stats import LevelStats
from deployer.core.fit.calibration import Calibration, CalibrationKey
from deployer.core.fit.plan import Option
from deployer.core.fit.throughput import (
    MODEL_VERSION,
    Efficiency,
    LoadPrediction,
    device_kind,
    efficiency_for,
    predict_load,
)
from deployer.core.hardware.profiles import Profile

MAX_EFFICIENCY = 1.5  # Calibration's bound: a fit above it is a measurement gone wrong
MIN_PREFILL_TOKENS = 32  # a shorter prefill is mostly fixed overhead: no measure of FLOPS


def prediction_dict(p: LoadPrediction, output_tokens: int) -> dict[str, Any]:
    """The predicted figures a level shows beside its measured ones.

    `delivered_tokens_per_s` (requests/s x output tokens: prefills included) is what compares
    with a level's measured aggregate, which is output tokens over the level's wall time;
    `aggregate_tokens_per_s` is the rate while every slot decodes (plan's `load`). A closed
    loop of equal requests stays in step (all of a level's streams send together), so its
    measured TTFT compares with `ttft_burst_s`, not with `ttft_s` (a request arriving alone)."""
    return {
        "delivered_tokens_per_s": round(p.requests_per_s * output_tokens, 3),
        "aggregate_tokens_per_s": round(p.aggregate_tokens_per_s, 3),
        "stream_tokens_per_s": round(p.per_stream_tokens_per_s, 3),
        "prefill_tokens_per_s": round(p.prefill_tokens_per_s, 3),
        "ttft_s": round(p.ttft_s, 6),
        "ttft_burst_s": round(p.ttft_burst_s, 6),
        "e2e_s": round(p.e2e_s, 6),
        "requests_per_s": round(p.requests_per_s, 4),
        "compute_bound": p.compute_bound,
        "efficiency": {
            "memory": p.efficiency.memory,
            "compute": p.efficiency.compute,
            "source": p.efficiency.source,
        },
    }


@dataclass(frozen=True)
class CalibrationFit:
    """A calibration fitted from a sweep, or why none was."""

    calibration: Calibration | None
    note: str


class Predictor:
    """Predictions for one model option on one profile at the bench's request shape."""

    def __init__(
        self,
        option: Option,
        profile: Profile,
        *,
        key: CalibrationKey,
        calibration: Calibration | None,
        prompt_tokens: int,
        output_tokens: int,
    ) -> None:
        self.option, self.profile, self.key = option, profile, key
        self.calibration = calibration
        self.prompt_tokens, self.output_tokens = prompt_tokens, output_tokens
        self.note = ""

    def _predict(self, slots: int, efficiency: Efficiency, prompt_tokens: int) -> LoadPrediction:
        return predict_load(
            self.option, self.profile, slots=slots, prompt_tokens=prompt_tokens,
            output_tokens=self.output_tokens, efficiency=efficiency,
        )  # fmt: skip

    def at(self, slots: int) -> LoadPrediction:
        """The prediction with `slots` streams at once (calibrated efficiencies when known)."""
        return self._predict(slots, efficiency_for(self.profile, self.calibration),
                             self.prompt_tokens)  # fmt: skip

    def fit(self, one_stream: LevelStats, measured_on: str, deployment: str) -> CalibrationFit:
        """Efficiencies from the 1-stream level. Prefill time is compute alone, so the compute
        efficiency is default x measured / predicted prefill speed; then the memory efficiency
        is the one at which the model's one-stream decode step (memory and compute, combined as
        the device does) takes the measured time, found by bisection."""
        if one_stream.concurrency != 1 or one_stream.completed == 0:
            return CalibrationFit(None, "no completed 1-stream level to calibrate from")
        decode = one_stream.server_stream_tokens_per_s or one_stream.stream_tokens_per_s
        prefill = one_stream.prefill_tokens_per_s
        if not decode or not prefill:
            return CalibrationFit(None, "the 1-stream level measured no decode or prefill speed")
        prompt = max(1, round(one_stream.prompt_tokens or self.prompt_tokens))
        default = efficiency_for(self.profile, None)
        predicted = self._predict(1, default, prompt)
        if predicted.per_stream_tokens_per_s <= 0 or predicted.prefill_tokens_per_s <= 0:
            return CalibrationFit(None, "the model predicts no speed to compare with")
        compute = default.compute * prefill / predicted.prefill_tokens_per_s
        kept = ""
        if prompt < MIN_PREFILL_TOKENS:
            compute = default.compute
            kept = f" (compute efficiency kept at the default: {prompt} prompt tokens measure no prefill)"
        if not 0 < compute <= MAX_EFFICIENCY:
            return CalibrationFit(
                None, f"fitted compute efficiency {compute:.2f} is outside (0, {MAX_EFFICIENCY}]"
            )
        memory = self._memory_efficiency(decode, compute, prompt)
        if memory is None:
            return CalibrationFit(
                None,
                f"measured decode {decode:.1f} tokens/s is more than the model allows at "
                f"memory efficiency {MAX_EFFICIENCY} (compute efficiency {compute:.2f})",
            )
        cal = Calibration(
            key=self.key, memory_efficiency=round(memory, 4), compute_efficiency=round(compute, 4),
            measured_on=measured_on, deployment=deployment,
            model_version=MODEL_VERSION[device_kind(self.profile)],
        )  # fmt: skip
        return CalibrationFit(
            cal, f"calibration saved: plan on {self.key.profile} now uses it{kept}"
        )

    def _memory_efficiency(self, decode: float, compute: float, prompt: int) -> float | None:
        """The memory efficiency at which one stream decodes at `decode` tokens/s (None when
        even MAX_EFFICIENCY is too slow); predicted speed rises with it, so bisect."""

        def speed(memory: float) -> float:
            eff = Efficiency(memory, compute, "fit")
            return self._predict(1, eff, prompt).per_stream_tokens_per_s

        low, high = 1e-4, MAX_EFFICIENCY
        if speed(high) < decode:
            return None
        if speed(low) >= decode:
            return low
        for _ in range(60):
            mid = (low + high) / 2
            low, high = (mid, high) if speed(mid) < decode else (low, mid)
        return high
