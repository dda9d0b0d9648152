"""What counts as a right answer: the scorers an item lists, each checked against the answer.

Every scorer is validated when the data file is read (pydantic, unknown keys refused) and runs
on bounded text: an answer is scored on its first MAX_SCORED_CHARS characters. Regular
expressions (the `regex` scorer, and `pattern` keywords inside a JSON schema) are short,
compiled once, and searched with a timeout, so a pattern that backtracks without end
(ReDoS) fails its item instead of hanging the run.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import jsonschema
import regex
from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_SCORED_CHARS = 64 * 1024
MAX_PATTERN_CHARS = 256
MAX_REPEAT = 1000  # the largest {m,n} count a pattern may hold
REGEX_TIMEOUT_S = 0.5
MAX_VALUE_CHARS = 4096
MAX_RUBRIC_CHARS = 4096
MAX_SCHEMA_CHARS = 64 * 1024
MAX_ABS_NUMBER = 1e300

# A number as people write it: sign, digits, a decimal part, an exponent ("1,000" reads as 1).
NUMBER_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_REPEAT_RE = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")
_FENCE_RE = re.compile(r"^```[A-Za-z0-9_-]*\n(.*)\n```$", re.DOTALL)


class _Scorer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def check_pattern(pattern: str) -> regex.Pattern[str]:
    """`pattern` compiled, or ValueError: too long, a repeat count over MAX_REPEAT, invalid."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"pattern longer than {MAX_PATTERN_CHARS} characters")
    for low, high in _REPEAT_RE.findall(pattern):
        if int(low) > MAX_REPEAT or (high and int(high) > MAX_REPEAT):
            raise ValueError(f"pattern repeats more than {MAX_REPEAT} times")
    try:
        return regex.compile(pattern, regex.VERSION0)
    except (regex.error, OverflowError, RecursionError) as exc:
        raise ValueError(f"invalid pattern: {str(exc).splitlines()[0]}") from None


def timed_search(pattern: regex.Pattern[str], text: str) -> bool | None:
    """Whether `pattern` occurs in `text`; None when the search ran past REGEX_TIMEOUT_S."""
    try:
        return pattern.search(text[:MAX_SCORED_CHARS], timeout=REGEX_TIMEOUT_S) is not None
    except TimeoutError:
        return None


class Exact(_Scorer):
    """The answer, stripped of surrounding white space, equals `value`."""

    type: Literal["exact"]
    value: Annotated[str, Field(max_length=MAX_VALUE_CHARS)]
    ignore_case: bool = False


class Contains(_Scorer):
    """The answer holds `value` somewhere."""

    type: Literal["contains"]
    value: Annotated[str, Field(min_length=1, max_length=MAX_VALUE_CHARS)]
    ignore_case: bool = False


class Regex(_Scorer):
    """`pattern` is found in the answer (a search, not a full match: anchor it for one)."""

    type: Literal["regex"]
    pattern: Annotated[str, Field(min_length=1)]
    ignore_case: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        check_pattern(value)
        return value

    def compiled(self) -> regex.Pattern[str]:
        """The pattern, compiled with its flags."""
        return check_pattern(f"(?i:{self.pattern})" if self.ignore_case else self.pattern)


class Number(_Scorer):
    """The first number in the answer is within `tolerance` of `value`."""

    type: Literal["number"]
    value: float
    tolerance: Annotated[float, Field(ge=0)] = 0.0

    @field_validator("value", "tolerance")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value) or abs(value) > MAX_ABS_NUMBER:
            raise ValueError("must be a finite number")
        return value


class JsonSchema(_Scorer):
    """The answer (a ```json fence around it allowed) is JSON that `schema` accepts."""

    type: Literal["json_schema"]
    schema_: Annotated[dict[str, Any], Field(alias="schema")]

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value)) > MAX_SCHEMA_CHARS:
            raise ValueError(f"schema larger than {MAX_SCHEMA_CHARS} characters")
        for key, item in _walk(value):
            if key == "$ref" and not (isinstance(item, str) and item.startswith("#")):
                raise ValueError("only local '$ref's ('#/...') are allowed: nothing is fetched")
            if key == "pattern" and isinstance(item, str):
                check_pattern(item)
            if key == "patternProperties" and isinstance(item, dict):
                for pattern in item:
                    check_pattern(pattern)
        try:
            jsonschema.validators.validator_for(value).check_schema(value)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a JSON schema: {exc.message}") from None
        return value


class Judge(_Scorer):
    """A judge model (`--judge`) reads the question, the answer and `rubric`: PASS or FAIL."""

    type: Literal["judge"]
    rubric: Annotated[str, Field(min_length=1, max_length=MAX_RUBRIC_CHARS)]


Scorer = Annotated[
    Exact | Contains | Regex | Number | JsonSchema | Judge, Field(discriminator="type")
]
SCORER_TYPES = ("exact", "contains", "regex", "number", "json_schema", "judge")


@dataclass(frozen=True)
class ScoreResult:
    """One scorer's verdict on one answer; `detail` says why in a few words."""

    type: str
    passed: bool
    detail: str = ""


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair in a JSON document, depth first (iteratively: no recursion)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            for key, item in current.items():
                yield str(key), item
                stack.append(item)
        elif isinstance(current, list):
            stack.extend(current)


def first_number(text: str) -> float | None:
    """The first number written in `text` (bounded), or None."""
    found = NUMBER_RE.search(text[:MAX_SCORED_CHARS])
    if found is None:
        return None
    try:
        value = float(found.group())
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def _pattern_keyword(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if not isinstance(instance, str):
        return
    found = timed_search(check_pattern(pattern), instance)
    if found is None:
        yield jsonschema.ValidationError(f"pattern {pattern!r} timed out")
    elif not found:
        yield jsonschema.ValidationError(f"{instance[:40]!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[Any]:
    if not isinstance(instance, dict):
        return
    for pattern, sub in patterns.items():
        compiled = check_pattern(pattern)
        for key, value in instance.items():
            if timed_search(compiled, key):
                yield from validator.descend(value, sub, path=key, schema_path=pattern)


def _validator(schema: dict[str, Any]) -> Any:
    """The schema's own draft, with `pattern` and `patternProperties` searched under a timeout."""
    base = jsonschema.validators.validator_for(schema)
    # types-jsonschema leaves `extend` unannotated; through Any it type-checks with or without it
    extend: Any = jsonschema.validators.extend
    timed = extend(base, {"pattern": _pattern_keyword, "patternProperties": _pattern_properties})
    return timed(schema)


def _json_answer(text: str) -> str:
    stripped = text.strip()
    fenced = _FENCE_RE.match(stripped)
    return fenced.group(1) if fenced else stripped


def score_answer(
    scorer: Exact | Contains | Regex | Number | JsonSchema, answer: str
) -> ScoreResult:
    """One deterministic scorer on `answer` (bounded); judges go through `judge_prompt`."""
    text = answer[:MAX_SCORED_CHARS]
    if isinstance(scorer, Exact):
        got, want = text.strip(), scorer.value.strip()
        if scorer.ignore_case:
            got, want = got.casefold(), want.casefold()
        return ScoreResult("exact", got == want, "" if got == want else "differs")
    if isinstance(scorer, Contains):
        got, want = text, scorer.value
        if scorer.ignore_case:
            got, want = got.casefold(), want.casefold()
        return ScoreResult("contains", want in got, "" if want in got else "not found")
    if isinstance(scorer, Regex):
        found = timed_search(scorer.compiled(), text)
        if found is None:
            return ScoreResult("regex", False, f"timed out after {REGEX_TIMEOUT_S:g} s")
        return ScoreResult("regex", found, "" if found else "no match")
    if isinstance(scorer, Number):
        number = first_number(text)
        if number is None:
            return ScoreResult("number", False, "no number in the answer")
        ok = abs(number - scorer.value) <= scorer.tolerance
        return ScoreResult(
            "number", ok, "" if ok else f"{number:g} is off by {abs(number - scorer.value):g}"
        )
    return _score_json(scorer, text)


def _score_json(scorer: JsonSchema, text: str) -> ScoreResult:
    try:
        data = json.loads(_json_answer(text), parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return ScoreResult("json_schema", False, "not JSON")
    try:
        error = jsonschema.exceptions.best_match(_validator(scorer.schema_).iter_errors(data))
    except RecursionError:
        return ScoreResult("json_schema", False, "nested too deep")
    if error is None:
        return ScoreResult("json_schema", True)
    return ScoreResult("json_schema", False, error.message[:120])


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# ---- the judge --------------------------------------------------------------------------------

JUDGE_INSTRUCTIONS = (
    "You grade one answer against a rubric. Read the question, the answer and the rubric. "
    "Reply with exactly one word: PASS if the answer meets the rubric, FAIL if it does not."
)


def judge_prompt(question: str, answer: str, rubric: str) -> list[dict[str, str]]:
    """The chat a judge model is asked (the answer bounded to MAX_SCORED_CHARS)."""
    body = (
        f"Question:\n{question}\n\nAnswer:\n{answer[:MAX_SCORED_CHARS]}\n\nRubric:\n{rubric}\n\n"
        "Verdict (PASS or FAIL):"
    )
    return [{"role": "system", "content": JUDGE_INSTRUCTIONS}, {"role": "user", "content": body}]


_VERDICT_RE = re.compile(r"[A-Za-z]+")


def judge_verdict(reply: str) -> ScoreResult:
    """The judge's first word: PASS or FAIL; anything else fails the scorer and says so."""
    word = _VERDICT_RE.search(reply[:200])
    verdict = word.group().upper() if word else ""
    if verdict == "PASS":
        return ScoreResult("judge", True)
    if verdict == "FAIL":
        return ScoreResult("judge", False, "judge: FAIL")
    return ScoreResult("judge", False, "judge gave no PASS/FAIL verdict")
