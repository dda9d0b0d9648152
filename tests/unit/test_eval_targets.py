"""Target syntax, targets files, keys never given as values; reports escape what they quote."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployer.core.errors import DeployerError, InvalidDataFile, InvalidRequest
from deployer.core.eval.cost import Pricing
from deployer.core.eval.flow import EvalOutcome
from deployer.core.eval.items import parse_items
from deployer.core.eval.report import html_report, markdown_report, md_escape
from deployer.core.eval.runbook import ItemResult, Settings, build_manifest
from deployer.core.eval.summary import summarize, winners
from deployer.core.eval.targets import check_targets, parse_target, parse_targets_file


def test_the_three_kinds() -> None:
    dep = parse_target("prod-1")
    assert (dep.kind, dep.deployment, dep.label) == ("deployment", "prod-1", "prod-1")
    api = parse_target("url=https://api.openai.com/v1/,model=gpt-4o-mini,key-env=OPENAI_API_KEY")
    assert (api.kind, api.url, api.model, api.key_env) == (
        "url", "https://api.openai.com/v1", "gpt-4o-mini", "OPENAI_API_KEY")  # fmt: skip
    assert api.label == "api.openai.com/gpt-4o-mini"
    local = parse_target("http://127.0.0.1:8080")
    assert (local.url, local.model) == ("http://127.0.0.1:8080/v1", "default")
    model = parse_target("model=demo,quant=Q4_K_M")
    assert (model.kind, model.label) == ("model", "demo:Q4_K_M")
    assert (
        parse_target("url=http://h:1,model=m,name=mine,price-in=0.15,price-out=0.6").price_out
        == 0.6
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("url=https://x/v1,model=m,key=sk-123", "never given as a value"),
        ("url=https://x/v1,api-key=sk-123", "never given as a value"),
        ("url=https://user:sk-123@x/v1", "carries credentials"),
        ("url=https://x/v1?key=sk-123", "query"),
        ("url=ftp://x", "not an http(s) URL"),
        ("url=https://x,model=m,price-in=-1", "between 0"),
        ("url=https://x,model=m,price-in=nan", "between 0"),
        ("url=https://x,model=m,price-in=cheap", "not a number"),
        ("url=https://x,model=m,key-env=1BAD", "not a variable name"),
        ("url=https://x,key-env=A,key-file=/k", "not both"),
        ("url=https://x,quant=Q4", "does not go with"),
        ("model=demo,key-env=A", "does not go with"),
        ("Bad_Name", "not a deployment name"),
        ("url=https://x,colour=red", "unknown field"),
        ("url=https://x,url=https://y", "given twice"),
        ("url=https://x,name=a b", "not a label"),
        ("x=", "not key=value"),
        ("url=https://x/v1,model=m,key=sk-1,23", "never given as a value"),
        ("url=https://x/v1,model=m,key=sk-1,23,name=", "never given as a value"),
        ("url=https://x/v1,model=m,token=sk-1,23=4", "never given as a value"),
    ],
)
def test_bad_targets(text: str, problem: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_target(text)
    message = info.value.message()
    assert problem in message and "\n" not in message
    # a key given by mistake is not echoed back, not even the part after a ',' in it
    assert "sk-123" not in message and "23" not in message


@given(st.text(max_size=120))
def test_any_text_is_a_target_or_one_error(text: str) -> None:
    try:
        parse_target(text)
    except DeployerError as exc:
        assert "\n" not in exc.message()


def test_targets_file() -> None:
    text = (
        "targets:\n"
        "  - deployment: prod-1\n"
        "  - url: https://api.example.com/v1\n    model: m\n    key-env: EX_KEY\n"
        "    price-in: 0.15\n    price-out: 0.6\n    name: closed\n"
    )
    a, b = parse_targets_file(text, "t.yaml")
    assert (a.kind, b.kind, b.price_in, b.label) == ("deployment", "url", 0.15, "closed")
    with pytest.raises(InvalidRequest, match="never given as a value"):
        parse_targets_file("targets:\n  - url: https://x\n    key: sk-1\n", "t.yaml")
    with pytest.raises(InvalidDataFile) as info:
        parse_targets_file("targets:\n  - url: https://x\n    colour: red\n", "t.yaml")
    assert info.value.message() == "t.yaml:3: targets.0.colour: unknown key"


def test_labels_must_be_unique() -> None:
    with pytest.raises(InvalidRequest, match="two targets are called"):
        check_targets([parse_target("a-1"), parse_target("deployment=b,name=a-1")])


# ---- reports --------------------------------------------------------------------------------

HOSTILE = "<script>alert(1)</script>|**x**`\x1b[2J"


def _outcome() -> EvalOutcome:
    line = json.dumps({"id": "q1", "prompt": "p", "expect": [{"type": "contains", "value": "x"}]})
    data = parse_items(line, "data<b>.jsonl", "0" * 64)
    t1 = parse_target("url=http://127.0.0.1:1,model=m,name=good")
    t2 = parse_target("url=http://127.0.0.1:2,model=m,name=bad")
    results = {
        ("good", "q1"): ItemResult(
            "good",
            "q1",
            True,
            answer="x",
            tokens_in=1,
            tokens_out=1,
            latency_s=0.1,
            started=1,
            ended=2,
        ),
        ("bad", "q1"): ItemResult("bad", "q1", False, error_kind="http 500", error=HOSTILE),
    }
    from deployer.core.eval.scorers import ScoreResult

    results["good", "q1"] = ItemResult(
        "good", "q1", True, answer="x", scores=(ScoreResult("contains", True),),
        latency_s=0.1, started=1, ended=2,
    )  # fmt: skip
    summaries = [summarize(t, data, results, Pricing("none")) for t in (t1, t2)]
    manifest = build_manifest(data, [t1, t2], Settings(), None)
    return EvalOutcome(manifest, summaries, winners(summaries), results, 0, 0, [])


def test_markdown_report_escapes_what_it_quotes() -> None:
    text = markdown_report(_outcome())
    assert "<script>" not in text and "\x1b" not in text
    assert "&lt;script&gt;" in text and "\\|" in text and "data&lt;b&gt;.jsonl" in text
    table = [ln for ln in text.splitlines() if ln.startswith(("| good | 1.0", "| bad | -"))]
    assert len(table) == 2 and all(ln.count(" | ") == 7 for ln in table)
    (failure,) = [ln for ln in text.splitlines() if ln.startswith("- bad")]
    assert "\\|" in failure and "\\*\\*x" in failure  # quoted markup stays text


def test_html_report_escapes_what_it_quotes() -> None:
    text = html_report(_outcome())
    assert "<script>" not in text and "\x1b" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


@given(st.text(max_size=60))
def test_md_escape_leaves_no_markup(value: str) -> None:
    out = md_escape(value)
    assert "<" not in out and "\n" not in out
    assert "|" not in out.replace("\\|", "")
