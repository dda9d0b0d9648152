"""Calibration: what `deployer bench` measured on a machine, used by `plan` on the same machine.

The throughput model (`throughput.py`) has two free parameters per machine: the share of peak
memory bandwidth a decode step reaches, and the share of peak FLOPS a prefill reaches. `bench`
fits them from its own measurements (single-stream decode speed; prompt tokens per second) and
remembers them per profile, model, quant and backend; `plan` on a matching machine uses them
instead of its defaults and says so ("calibrated by bench on DATE").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class CalibrationKey:
    """What a measurement is valid for: one machine (profile id), model, quant and backend."""

    profile: str
    model: str
    quant: str
    backend: str


@dataclass(frozen=True)
class Calibration:
    """Efficiencies fitted from one bench run."""

    key: CalibrationKey
    memory_efficiency: float  # share of peak memory bandwidth a decode step reached (0, 1.5]
    compute_efficiency: float  # share of peak FLOPS a prefill reached (0, 1.5]
    measured_on: str  # ISO date (YYYY-MM-DD) of the bench run
    deployment: str = ""  # the deployment or URL benched, for the message
    # The throughput model it was fitted against (throughput.MODEL_VERSION for the profile's
    # kind): efficiencies fitted to one model's shape mean something else to another. Entries
    # saved before versions were kept are version 1.
    model_version: int = 1

    def note(self) -> str:
        """The words `plan` shows."""
        return f"calibrated by bench on {self.measured_on}"


class Calibrations(Protocol):
    """Where calibrations are kept (adapters/calibration_store.py keeps a JSON file)."""

    def lookup(self, key: CalibrationKey) -> Calibration | None:
        """The latest calibration for `key`, if bench has measured it."""
        ...

    def remember(self, calibration: Calibration) -> None:
        """Keep `calibration`, replacing any older one for the same key (atomically)."""
        ...


class NoCalibrations:
    """A store that knows nothing: the defaults apply (tests, and `plan --no-calibration`)."""

    def lookup(self, key: CalibrationKey) -> Calibration | None:
        return None

    def remember(self, calibration: Calibration) -> None:
        return None
