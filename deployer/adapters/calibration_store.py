"""Calibrations `deployer bench` measured, kept in one JSON file under the state dir
(deployer.core.fit.calibration.Calibrations).

The file is state deployer wrote, but read as hostile: bounded, every entry checked; a file
that cannot be read or is not ours becomes a warning (`warnings`) and no calibration, never a
crash, so `plan` still answers with its defaults. Writes are atomic (statefile.write_state_json).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

from deployer.adapters.data_files import state_dir
from deployer.adapters.statefile import read_state_json, write_state_json
from deployer.core.errors import StateFileInvalid
from deployer.core.fit.calibration import Calibration, CalibrationKey
from deployer.core.untrusted import shown

FILE_NAME = "calibrations.json"
VERSION = 1
MAX_FILE_BYTES = 1024 * 1024  # thousands of entries; a bigger file is not one we wrote
MAX_ENTRIES = 4096
MAX_TEXT = 256
MAX_EFFICIENCY = 1.5  # Calibration's documented range (0, 1.5]
_KEY_FIELDS = ("profile", "model", "quant", "backend")
_FIELDS = (*_KEY_FIELDS, "memory_efficiency", "compute_efficiency", "measured_on", "deployment",
           "model_version")  # fmt: skip
MAX_MODEL_VERSION = 1000
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class FileCalibrationStore:
    """Calibrations in <state dir>/calibrations.json, one per (profile, model, quant, backend)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else state_dir() / FILE_NAME
        self.warnings: list[str] = []

    def lookup(self, key: CalibrationKey) -> Calibration | None:
        """The calibration for `key`, if bench has measured it (none when the file is bad)."""
        return self._read().get(key)

    def remember(self, calibration: Calibration) -> None:
        """Keep `calibration`, replacing any older one for the same key (atomically)."""
        problem = _problem(_as_record(calibration))
        if problem is not None:
            raise ValueError(f"not a calibration to keep: {problem}")
        table = self._read()
        table[calibration.key] = calibration
        entries = [_as_record(c) for c in table.values()][-MAX_ENTRIES:]
        write_state_json(self.path, {"version": VERSION, "calibrations": entries})

    def _read(self) -> dict[CalibrationKey, Calibration]:
        try:
            data = read_state_json(self.path, max_bytes=MAX_FILE_BYTES)
        except FileNotFoundError:
            return {}
        except StateFileInvalid as exc:
            self._warn(f"{shown(exc.path)} {exc.problem}")
            return {}
        if (
            not isinstance(data, dict)
            or data.get("version") != VERSION
            or not isinstance(data.get("calibrations"), list)
        ):
            self._warn(f"{self.path} is not a calibration file version {VERSION}")
            return {}
        table: dict[CalibrationKey, Calibration] = {}
        for n, entry in enumerate(data["calibrations"][:MAX_ENTRIES]):
            problem = _problem(entry)
            if problem is not None:
                self._warn(f"{self.path}: entry {n} skipped: {problem}")
                continue
            cal = _from_record(entry)
            table[cal.key] = cal
        return table

    def _warn(self, text: str) -> None:
        message = f"calibration ignored: {text}; run `deployer bench` again to replace it"
        if message not in self.warnings:
            self.warnings.append(message)


def _as_record(c: Calibration) -> dict[str, Any]:
    record = asdict(c.key)
    record.update(
        memory_efficiency=c.memory_efficiency,
        compute_efficiency=c.compute_efficiency,
        measured_on=c.measured_on,
        deployment=c.deployment,
        model_version=c.model_version,
    )
    return record


def _from_record(entry: dict[str, Any]) -> Calibration:
    return Calibration(
        key=CalibrationKey(*(entry[k] for k in _KEY_FIELDS)),
        memory_efficiency=float(entry["memory_efficiency"]),
        compute_efficiency=float(entry["compute_efficiency"]),
        measured_on=entry["measured_on"],
        deployment=entry.get("deployment", ""),
        model_version=entry.get("model_version", 1),  # saved before versions were kept
    )


def _problem(entry: object) -> str | None:
    """What is wrong with one stored entry, or None."""
    if not isinstance(entry, dict):
        return "not an object"
    for name in (*_KEY_FIELDS, "measured_on"):
        value = entry.get(name)
        if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
            return f"{name} is not a short text"
        if not value.isprintable():
            return f"{name} {shown(value)} holds control characters"
    deployment = entry.get("deployment", "")
    if (
        not isinstance(deployment, str)
        or len(deployment) > MAX_TEXT
        or not deployment.isprintable()
    ):
        return "deployment is not a short text"
    for name in ("memory_efficiency", "compute_efficiency"):
        value = entry.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name} is not a number"
        if not math.isfinite(value) or not 0 < value <= MAX_EFFICIENCY:
            return f"{name} {value!r} is outside (0, {MAX_EFFICIENCY}]"
    try:
        if not _ISO_DATE.fullmatch(entry["measured_on"]):
            raise ValueError("not YYYY-MM-DD")
        date.fromisoformat(entry["measured_on"])
    except ValueError:
        return f"measured_on {shown(entry['measured_on'])} is not a date YYYY-MM-DD"
    version = entry.get("model_version", 1)
    if isinstance(version, bool) or not isinstance(version, int):
        return "model_version is not a whole number"
    if not 1 <= version <= MAX_MODEL_VERSION:
        return f"model_version {version} is outside 1..{MAX_MODEL_VERSION}"
    unknown = set(entry) - set(_FIELDS)
    if unknown:
        return f"unknown field {shown(sorted(unknown)[0])}"
    return None
