"""Scorers on answers, hostile data files, and regexes that would hang without a timeout."""

from __future__ import annotations

import json
import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployer.core.errors import InvalidDataFile
from deployer.core.eval.items import MAX_ITEMS, MAX_LINE_CHARS, parse_items
from deployer.core.eval.scorers import (
    MAX_PATTERN_CHARS,
    MAX_SCORED_CHARS,
    Contains,
    Exact,
    JsonSchema,
    Number,
    Regex,
    first_number,
    judge_verdict,
    score_answer,
)


def _one(scorer: dict[str, object], prompt: str = "q") -> object:
    line = json.dumps({"id": "a", "prompt": prompt, "expect": [scorer]})
    return parse_items(line, "d.jsonl", "0" * 64).items[0].expect[0]


def _error(line: str) -> str:
    with pytest.raises(InvalidDataFile) as info:
        parse_items(line, "d.jsonl", "0" * 64)
    return info.value.message()


# ---- each scorer ------------------------------------------------------------------------------


def test_exact_strips_surrounding_space_and_can_ignore_case() -> None:
    assert score_answer(Exact(type="exact", value="Paris"), "  Paris\n").passed
    assert not score_answer(Exact(type="exact", value="Paris"), "paris").passed
    assert score_answer(Exact(type="exact", value="Paris", ignore_case=True), "PARIS").passed
    assert not score_answer(Exact(type="exact", value="Paris"), "Paris, France").passed


@given(st.text(max_size=50), st.text(min_size=1, max_size=10), st.text(max_size=50))
def test_contains_finds_the_value_wherever_it_is(before: str, value: str, after: str) -> None:
    assert score_answer(Contains(type="contains", value=value), before + value + after).passed


@given(st.text(max_size=100), st.text(min_size=1, max_size=10))
def test_contains_agrees_with_in(answer: str, value: str) -> None:
    assert score_answer(Contains(type="contains", value=value), answer).passed == (value in answer)


@given(
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e9, max_value=1e9),
    st.floats(min_value=0, max_value=1e6),
    st.sampled_from(["", "The answer is ", "= "]),
)
def test_number_within_tolerance(value: float, tolerance: float, prefix: str) -> None:
    written = repr(value)
    scorer = Number(type="number", value=value, tolerance=tolerance)
    assert score_answer(scorer, f"{prefix}{written} apples").passed
    far = value + tolerance + max(1.0, abs(value) * 1e-6)
    assert not score_answer(scorer, f"{prefix}{far!r}").passed or far - value <= tolerance


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("x = -3.5e2 y", -350.0),
        ("no digits", None),
        ("1,000", 1.0),
        (".5", 0.5),
        ("+7", 7.0),
        ("1e999", None),
    ],
)
def test_first_number(text: str, number: float | None) -> None:
    assert first_number(text) == number


def test_number_reads_only_the_first_number() -> None:
    scorer = Number(type="number", value=8, tolerance=0)
    assert score_answer(scorer, " 8, 9, 10").passed
    assert not score_answer(scorer, " 9, 8").passed


@given(st.text(alphabet="ab", max_size=30))
def test_regex_is_a_search(text: str) -> None:
    scorer = Regex(type="regex", pattern="ab+")
    assert score_answer(scorer, text).passed == ("ab" in text)


def test_regex_ignore_case_and_anchors() -> None:
    assert score_answer(Regex(type="regex", pattern="^paris$", ignore_case=True), "PARIS").passed
    assert not score_answer(Regex(type="regex", pattern="^paris$"), "PARIS").passed


def test_a_catastrophic_pattern_times_out_instead_of_hanging() -> None:
    scorer = Regex(type="regex", pattern="^(a|aa)+$")
    started = time.monotonic()
    result = score_answer(scorer, "a" * 40 + "!")
    assert time.monotonic() - started < 5
    assert not result.passed and "timed out" in result.detail


def test_json_schema_scorer() -> None:
    schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
    scorer = _one({"type": "json_schema", "schema": schema})
    assert isinstance(scorer, JsonSchema)
    assert score_answer(scorer, '{"n": 3}').passed
    assert score_answer(scorer, '```json\n{"n": 3}\n```').passed
    assert score_answer(scorer, '{"n": "3"}').detail.startswith("'3' is not of type")
    assert score_answer(scorer, "n is 3").detail == "not JSON"
    assert not score_answer(scorer, '{"n": NaN}').passed
    assert not score_answer(scorer, "[" * 100_000).passed  # nesting bomb: refused, no crash


def test_a_schema_pattern_is_searched_with_a_timeout() -> None:
    schema = {"type": "string", "pattern": "^(a|aa)+$"}
    scorer = _one({"type": "json_schema", "schema": schema})
    assert isinstance(scorer, JsonSchema)
    started = time.monotonic()
    result = score_answer(scorer, json.dumps("a" * 40 + "!"))
    assert time.monotonic() - started < 5 and not result.passed


@given(st.text(max_size=300))
def test_every_scorer_survives_any_answer(answer: str) -> None:
    for scorer in (
        Exact(type="exact", value="x"), Contains(type="contains", value="x"),
        Regex(type="regex", pattern="x+y?"), Number(type="number", value=1, tolerance=0.5),
        JsonSchema.model_validate({"type": "json_schema", "schema": {"type": "object"}}),
    ):  # fmt: skip
        result = score_answer(scorer, answer)
        assert isinstance(result.passed, bool)


def test_only_the_first_chars_are_scored() -> None:
    answer = "x" * MAX_SCORED_CHARS + "needle"
    assert not score_answer(Contains(type="contains", value="needle"), answer).passed


@pytest.mark.parametrize(
    ("reply", "passed", "detail"),
    [("PASS", True, ""), (" pass.", True, ""), ("FAIL: wrong", False, "judge: FAIL"),
     ("I think it passes", False, "judge gave no PASS/FAIL verdict"), ("", False, "judge gave no PASS/FAIL verdict")],
)  # fmt: skip
def test_judge_verdict(reply: str, passed: bool, detail: str) -> None:
    got = judge_verdict(reply)
    assert (got.passed, got.detail) == (passed, detail)


# ---- hostile data files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scorer", "problem"),
    [
        ({"type": "regex", "pattern": "(a"}, "invalid pattern"),
        ({"type": "regex", "pattern": "a" * (MAX_PATTERN_CHARS + 1)}, "longer than"),
        ({"type": "regex", "pattern": "(a{1000}){1000}x{5000}"}, "repeats more than"),
        ({"type": "number", "value": "8"}, "valid number"),
        ({"type": "number", "value": 1, "tolerance": -1}, "greater than or equal"),
        ({"type": "number", "value": 1e308 * 10}, ""),
        ({"type": "json_schema", "schema": {"$ref": "https://example.com/s.json"}}, "local '$ref'"),
        ({"type": "json_schema", "schema": {"type": "nonsense"}}, "not a JSON schema"),
        ({"type": "json_schema", "schema": {"pattern": "(x"}}, "invalid pattern"),
        ({"type": "judge", "rubric": ""}, "at least 1 character"),
        ({"type": "contains", "value": ""}, "at least 1 character"),
        ({"type": "exact", "value": "a", "extra": 1}, "unknown key"),
        ({"type": "lua", "code": "os.exit()"}, "unknown scorer type"),
    ],
)
def test_bad_scorers_are_one_line_naming_file_and_line(
    scorer: dict[str, object], problem: str
) -> None:
    line = json.dumps({"prompt": "q", "expect": [scorer]}).replace("Infinity", "1e999")
    message = _error("\n" + line)
    assert message.startswith("d.jsonl:2: ") and "\n" not in message
    assert problem in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"prompt": "q"}', "expect: Field required"),
        ('{"prompt": "q", "messages": [{"role": "user", "content": "q"}], "expect": [{"type": "exact", "value": "a"}]}',
         "exactly one of"),
        ('{"messages": [{"role": "root", "content": "q"}], "expect": [{"type": "exact", "value": "a"}]}', "messages.0.role"),
        ('{"id": "../x", "prompt": "q", "expect": [{"type": "exact", "value": "a"}]}', "id: String should match"),
        ('{"prompt": 3, "expect": [{"type": "exact", "value": "a"}]}', "prompt"),
        ('{"prompt": "q", "max_tokens": 0, "expect": [{"type": "exact", "value": "a"}]}', "max_tokens"),
        ("[1, 2]", "expected a JSON object"),
        ("{nope", "not JSON"),
        ('{"prompt": "q", "expect": [{"type": "number", "value": NaN}]}', "NaN is not valid JSON"),
        ("[" * 100_000, "nested too deep"),
        ("", "no items"),
    ],
)  # fmt: skip
def test_bad_lines(text: str, problem: str) -> None:
    message = _error(text)
    assert problem in message and "\n" not in message


def test_duplicate_ids_name_both_lines() -> None:
    line = json.dumps({"id": "x", "prompt": "q", "expect": [{"type": "exact", "value": "a"}]})
    assert "d.jsonl:3: id 'x' is also on line 1" in _error(f"{line}\n\n{line}")


def test_line_length_and_item_count_are_bounded() -> None:
    long_line = json.dumps(
        {"prompt": "q" * MAX_LINE_CHARS, "expect": [{"type": "exact", "value": "a"}]}
    )
    assert "longer than" in _error(long_line)
    line = json.dumps({"prompt": "q", "expect": [{"type": "exact", "value": "a"}]})
    assert f"more than {MAX_ITEMS} items" in _error("\n".join([line] * (MAX_ITEMS + 1)))


def test_ids_default_to_the_line() -> None:
    line = json.dumps({"prompt": "q", "expect": [{"type": "exact", "value": "a"}]})
    items = parse_items(f"\n{line}\n", "d.jsonl", "0" * 64).items
    assert [(i.id, i.line) for i in items] == [("line-2", 2)]


@given(st.text(max_size=200))
def test_any_line_is_an_item_or_one_error_line(text: str) -> None:
    try:
        parse_items(text, "d.jsonl", "0" * 64)
    except InvalidDataFile as exc:
        assert "\n" not in exc.message()


def test_the_example_file_in_docs_parses() -> None:
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "docs" / "eval-example.jsonl"
    data = parse_items(path.read_text(), str(path), "0" * 64)
    kinds = {s.type for item in data.items for s in item.expect}
    assert kinds == {"exact", "contains", "regex", "number", "json_schema", "judge"}
    assert not math.isnan(len(data.items))
