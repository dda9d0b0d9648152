"""Throughput under load: aggregate decode speed for N slots, prefill speed, time to first token.

CONTRACT (implemented by the plan-load work; bench calls it): signatures below are fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployer.core.fit.calibration import Calibration
from deployer.core.fit.plan import Option
from deployer.core.hardware.profiles import Profile


@dataclass(frozen=True)
class Efficiency:
    """Shares of the peak a machine reaches: memory bandwidth in decode, FLOPS in prefill."""

    memory: float
    compute: float
    source: str  # "default assumption" or Calibration.note()


@dataclass(frozen=True)
class LoadPrediction:
    """What one server is predicted to do with `slots` streams busy at once."""

    slots: int
    aggregate_tokens_per_s: float  # output tokens/s summed over the streams
    per_stream_tokens_per_s: float  # output tokens/s one stream sees
    prefill_tokens_per_s: float  # prompt tokens/s processed
    ttft_s: float  # time to first token for one request of `prompt_tokens`
    e2e_s: float  # end-to-end time of one request (ttft + output tokens at per-stream speed)
    requests_per_s: float  # slots / e2e_s
    compute_bound: bool  # the decode step is limited by FLOPS, not memory bandwidth
    efficiency: Efficiency


def efficiency_for(profile: Profile, calibration: Calibration | None) -> Efficiency:
    """The default efficiencies for the profile's kind, or the calibrated ones."""
    raise NotImplementedError


def predict_load(
    option: Option,
    profile: Profile,
    *,
    slots: int,
    prompt_tokens: int,
    output_tokens: int,
    efficiency: Efficiency,
) -> LoadPrediction:
    """Predicted throughput and latency of `option` (a plan's chosen configuration) with
    `slots` requests of `prompt_tokens` in and `output_tokens` out running at once."""
    raise NotImplementedError
