"""The run folder's bookkeeping: its manifest (what the run asks: a hash of the data, the
targets and the settings) and its results, one JSON line per (target, item), appended as each
answer is scored. A killed run is continued from these lines: an item with an answer is never
asked again, a failed one is. The folder is read as hostile (a file edited by hand, a line cut
by a kill): a line that is not a valid result is skipped and counted."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from deployer.core.errors import EvalRunMismatch
from deployer.core.eval.items import EvalData
from deployer.core.eval.scorers import SCORER_TYPES, ScoreResult
from deployer.core.eval.targets import TargetSpec

MANIFEST_VERSION = 1
MAX_ANSWER_CHARS = 64 * 1024
MAX_REASON_CHARS = 300
# A line holds an answer of up to MAX_ANSWER_CHARS written as ASCII JSON: an emoji is 12
# characters there (a surrogate pair of \\uXXXX), so the longest answer is 768 KiB of line;
# 16 score details and the rest fit in the remainder. A longer line would not be read back,
# and its item would be asked again on resume.
MAX_RESULT_LINE_CHARS = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """How every request is made (part of what the run folder's hash covers)."""

    temperature: float = 0.0
    seed: int = 0
    max_tokens: int = 256  # for items that do not give their own


class RunFolder(Protocol):
    """Where a run's manifest and results live (deployer.adapters.eval_runs.DiskRunFolder)."""

    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest, None when the folder is new."""
        ...

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Write the manifest (atomically)."""
        ...

    def read_result_lines(self) -> list[str]:
        """Every line of the results file (bounded)."""
        ...

    def append_result(self, line: dict[str, Any]) -> None:
        """Append one result line and make it durable before returning."""
        ...


@dataclass(frozen=True)
class ItemResult:
    """One target's answer to one item, scored; or why there is none."""

    target: str
    item: str
    ok: bool
    answer: str | None = None
    error_kind: str | None = None  # ok False: "http 503", "timeout", "connection", ...
    error: str | None = None
    scores: tuple[ScoreResult, ...] = ()
    latency_s: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    attempts: int = 0
    started: float = 0.0  # wall clock, epoch seconds
    ended: float = 0.0

    @property
    def score(self) -> float:
        """The item's score: the share of its scorers that passed (0 when unanswered)."""
        if not self.ok or not self.scores:
            return 0.0
        return sum(1 for s in self.scores if s.passed) / len(self.scores)

    def as_json(self) -> dict[str, Any]:
        """The results-file line (a contract: fields are only ever added)."""
        return {
            "target": self.target, "item": self.item, "ok": self.ok,
            "score": round(self.score, 6) if self.ok else None,
            "answer": None if self.answer is None else self.answer[:MAX_ANSWER_CHARS],
            "error_kind": self.error_kind,
            "error": None if self.error is None else self.error[:MAX_REASON_CHARS],
            "scores": [{"type": s.type, "passed": s.passed, "detail": s.detail} for s in self.scores],
            "latency_s": self.latency_s, "tokens_in": self.tokens_in, "tokens_out": self.tokens_out,
            "attempts": self.attempts, "started": self.started, "ended": self.ended,
        }  # fmt: skip


def _sha256(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def build_manifest(
    data: EvalData, targets: list[TargetSpec], settings: Settings, judge: TargetSpec | None
) -> dict[str, Any]:
    """What this run asks; its `key` is a hash of the data, the targets and the settings."""
    body = {
        "data_sha256": data.sha256,
        "targets": [t.identity() for t in targets],
        "settings": {
            "temperature": settings.temperature,
            "seed": settings.seed,
            "max_tokens": settings.max_tokens,
        },
        "judge": judge.identity() if judge is not None else None,
    }
    return {
        "schema_version": MANIFEST_VERSION, "key": _sha256(body), "data_file": data.source,
        "items": len(data.items), **body,
    }  # fmt: skip


def check_same_run(existing: dict[str, Any], wanted: dict[str, Any], folder: str) -> None:
    """Refuse to continue a run folder made for other data, targets or settings."""
    if existing.get("schema_version") != MANIFEST_VERSION:
        raise EvalRunMismatch(folder, "its manifest is not one this deployer wrote")
    if existing.get("key") == wanted["key"]:
        return
    for what, key in (("the data file", "data_sha256"), ("the targets", "targets"),
                      ("the settings", "settings"), ("the judge", "judge")):  # fmt: skip
        if existing.get(key) != wanted[key]:
            raise EvalRunMismatch(folder, f"{what} differ from the run it holds")
    raise EvalRunMismatch(folder, "its manifest does not match this run")


def _number(value: Any, *, allow_none: bool = True) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("not a number")
    return float(value)


def _count(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 40:
        raise ValueError("not a count")
    return value


def _text(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError("not a bounded string")
    return value


def result_from_json(raw: Any) -> ItemResult:
    """A results-file line back as an ItemResult; ValueError when it is not one."""
    if not isinstance(raw, dict):
        raise ValueError("not an object")
    scores = []
    for s in raw.get("scores") or []:
        if not isinstance(s, dict) or s.get("type") not in SCORER_TYPES:
            raise ValueError("bad score")
        if not isinstance(s.get("passed"), bool):
            raise ValueError("bad score")
        scores.append(ScoreResult(s["type"], s["passed"], _text(s.get("detail"), 1000) or ""))
    target, item, ok = raw.get("target"), raw.get("item"), raw.get("ok")
    if not isinstance(target, str) or not isinstance(item, str) or not isinstance(ok, bool):
        raise ValueError("no target, item or ok")
    return ItemResult(
        target=target, item=item, ok=ok, answer=_text(raw.get("answer"), MAX_ANSWER_CHARS),
        error_kind=_text(raw.get("error_kind"), 100), error=_text(raw.get("error"), MAX_REASON_CHARS),
        scores=tuple(scores), latency_s=_number(raw.get("latency_s")),
        tokens_in=_count(raw.get("tokens_in")), tokens_out=_count(raw.get("tokens_out")),
        attempts=_count(raw.get("attempts")) or 0,
        started=_number(raw.get("started"), allow_none=False) or 0.0,
        ended=_number(raw.get("ended"), allow_none=False) or 0.0,
    )  # fmt: skip


@dataclass
class LoadedResults:
    """The results a run folder holds: the latest line per (target, item), and how many lines
    could not be read (a line cut short by a kill, or edited by hand)."""

    latest: dict[tuple[str, str], ItemResult] = field(default_factory=dict)
    skipped: int = 0

    def answered(self, target: str, item: str) -> bool:
        """Whether `target` already answered `item` (then it is not asked again)."""
        found = self.latest.get((target, item))
        return found is not None and found.ok


def load_results(lines: list[str]) -> LoadedResults:
    """Parse the results file's lines; a later line for the same pair replaces an earlier one,
    except that a failure never replaces an answer."""
    out = LoadedResults()
    for text in lines:
        if not text.strip():
            continue
        try:
            if len(text) > MAX_RESULT_LINE_CHARS:
                raise ValueError("line too long")
            result = result_from_json(json.loads(text))
        except (ValueError, RecursionError):
            out.skipped += 1
            continue
        key = (result.target, result.item)
        if not out.answered(*key):
            out.latest[key] = result
    return out
