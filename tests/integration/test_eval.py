"""`deployer eval` against real endpoints: the demo model served twice with different settings,
a dead port, a closed API's stand-in, a killed run resumed, a model deployed for the run, two
quants of one Hub model compared."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deployer.cli.app import app
from tests.integration.evalkit import CountingProxy, StandInApi, llama_server_binary
from tests.integration.loopback import free_port

pytestmark = [
    pytest.mark.llama_server,
    pytest.mark.skipif(
        llama_server_binary() is None,
        reason="no llama-server build: run 'bash scripts/build-llama.sh' or set DEPLOYER_LLAMA_PREFIX",
    ),
]

SMALL = Path(__file__).parent / "eval_data" / "small.jsonl"
CLI = [sys.executable, "-c", "from deployer.cli.app import main; main()"]


def _cli(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def _item_scores(run_dir: Path, target: str) -> dict[str, dict[str, bool]]:
    out: dict[str, dict[str, bool]] = {}
    for line in (run_dir / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["target"] == target and row["ok"]:
            out[row["item"]] = {s["type"]: s["passed"] for s in row["scores"]}
    return out


def test_two_settings_score_apart_and_a_dead_target_is_reported(
    eval_servers: dict[str, str], tmp_path: Path
) -> None:
    run_dir, report = tmp_path / "run", tmp_path / "report.md"
    dead = f"url=http://127.0.0.1:{free_port()},model=x,name=dead"
    code, out, err = _cli(
        "eval", str(SMALL), "-t", f"url={eval_servers['plain']},name=plain",
        "-t", f"url={eval_servers['letters']},name=letters", "-t", dead,
        "--attempts", "2", "--run-dir", str(run_dir), "--report", str(report), "--json",
    )  # fmt: skip
    assert code == 0, err
    got = json.loads(out)
    by = {t["target"]: t for t in got["targets"]}
    # plain continues every sequence; letters cannot write a digit, so every number fails
    assert by["plain"]["score"] == pytest.approx(3.5 / 4)
    assert by["letters"]["score"] == pytest.approx(0.5 / 4)
    assert by["plain"]["ci95"]["method"] == "bootstrap"  # 'letters' item scores 0.5
    assert by["plain"]["ci95"]["low"] <= 0.875 <= by["plain"]["ci95"]["high"]
    assert got["winners"]["score"] == ["plain"]
    assert by["dead"]["answered"] == 0 and by["dead"]["failures"] == {"connection": 4}
    assert by["dead"]["score"] is None
    for t in ("plain", "letters"):
        assert by[t]["tokens_in"] > 0 and by[t]["tokens_out"] > 0
        assert 0 < by[t]["latency_p50_s"] <= by[t]["latency_p95_s"]
        assert by[t]["cost_basis"] == "none"  # no price given
    # every scorer, on both sides
    plain, letters = _item_scores(run_dir, "plain"), _item_scores(run_dir, "letters")
    assert plain["count"] == {"number": True, "regex": True}
    assert letters["count"] == {"number": False, "regex": False}
    assert plain["days"] == {"contains": True, "exact": True}
    assert letters["days"] == {"contains": False, "exact": False}
    assert plain["letters"] == {"exact": True, "contains": False}
    assert letters["letters"] == {"exact": False, "contains": True}
    assert plain["tens"] == {"number": True, "json_schema": True}
    assert letters["tens"] == {"number": False, "json_schema": False}
    text = report.read_text()
    assert "| **plain** |" not in text and "| plain | **0.875** |" in text
    assert "dead: 4 x connection" in text


def test_a_real_model_judges_with_a_rubric(eval_servers: dict[str, str], tmp_path: Path) -> None:
    """The judge path against a real llama-server: every judge call gets a verdict the scorer
    reads; the verdicts are the small model's own (its grammar allows only PASS or FAIL)."""
    data = tmp_path / "d.jsonl"
    rows = [{"id": f"j{i}", "prompt": p, "max_tokens": 4,
             "expect": [{"type": "judge", "rubric": "The answer continues the sequence."},
                        {"type": "contains", "value": w}]}
            for i, (p, w) in enumerate([("1, 2, 3,", "4"), ("Monday, Tuesday,", "Wednesday"),
                                        ("A, B, C,", "D")])]  # fmt: skip
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    run_dir = tmp_path / "run"
    code, out, err = _cli(
        "eval", str(data), "-t", f"url={eval_servers['plain']},name=plain",
        "--judge", f"url={eval_servers['judge']},name=judge", "--run-dir", str(run_dir), "--json",
    )  # fmt: skip
    assert code == 0, err
    (t,) = json.loads(out)["targets"]
    assert t["by_scorer"]["judge"]["n"] == 3 and t["by_scorer"]["contains"]["n"] == 3
    reasons = [s.get("detail") for line in (run_dir / "results.jsonl").read_text().splitlines()
               for s in json.loads(line)["scores"] if s["type"] == "judge"]  # fmt: skip
    assert len(reasons) == 3
    assert all(r in ("", "judge: FAIL") for r in reasons), reasons  # a verdict, every time


def _results(run_dir: Path) -> list[dict[str, object]]:
    path = run_dir / "results.jsonl"
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip().endswith("}")]


def test_a_killed_run_resumes_without_asking_answered_items_again(
    eval_servers: dict[str, str], tmp_path: Path
) -> None:
    proxy = CountingProxy(eval_servers["plain"])
    try:
        data = tmp_path / "d.jsonl"
        rows = [{"id": f"n{i}", "prompt": f"{i}, {i + 1}, {i + 2},", "max_tokens": 8,
                 "expect": [{"type": "number", "value": i + 3}]} for i in range(8)]  # fmt: skip
        data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        run_dir = tmp_path / "run"
        args = [*CLI, "eval", str(data), "-t", f"url={proxy.url},name=plain", "--concurrency", "1",
                "--run-dir", str(run_dir), "--json"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while len(_results(run_dir)) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        done_before = {str(r["item"]) for r in _results(run_dir)}
        assert 3 <= len(done_before) < 8, "the kill landed before or after the run"
        asked_before = sum(proxy.counts.values())

        code, out, err = _cli(*args[3:])
        assert code == 0, err
        got = json.loads(out)
        assert got["reused"] == len(done_before)
        prompt_of = {r["id"]: r["prompt"] for r in rows}
        for item in done_before:
            assert proxy.counts[str(prompt_of[item])] == 1, f"{item} was asked again"
        assert sum(proxy.counts.values()) - asked_before == 8 - len(done_before)
        lines = _results(run_dir)
        assert sorted(str(r["item"]) for r in lines) == sorted(
            str(k) for k in prompt_of
        )  # one line per item
        assert got["targets"][0]["answered"] == 8
        # the same run again asks nothing; other data in the same folder is refused
        before = sum(proxy.counts.values())
        code, out, _ = _cli(*args[3:])
        assert code == 0 and sum(proxy.counts.values()) == before
        data.write_text(data.read_text() + json.dumps({**rows[0], "id": "extra"}) + "\n")
        code, _, err = _cli(*args[3:])
        assert code == 2 and "the data file differ" in err
    finally:
        proxy.stop()


def test_a_closed_api_gets_its_key_as_bearer_and_the_key_is_written_nowhere(tmp_path: Path) -> None:
    key = "sk-standin-" + "7" * 24
    api = StandInApi(
        key,
        replies={"Capital of France? One word.": "Paris", "Ada as JSON": '{"name": "Ada", "age": 36}',
                 "Apologise.": "We are so sorry about the delay."},
        judge_pass="sorry",
    )  # fmt: skip
    try:
        data = tmp_path / "chat.jsonl"
        rows = [
            {"id": "cap", "messages": [{"role": "user", "content": "Capital of France? One word."}],
             "expect": [{"type": "exact", "value": "paris", "ignore_case": True}]},
            {"id": "ada", "messages": [{"role": "user", "content": "Ada as JSON"}],
             "expect": [{"type": "json_schema", "schema": {"type": "object", "required": ["age"],
                                                            "properties": {"age": {"type": "integer"}}}}]},
            {"id": "sorry", "messages": [{"role": "user", "content": "Apologise."}],
             "expect": [{"type": "judge", "rubric": "It apologises."}]},
        ]  # fmt: skip
        data.write_text("\n".join(json.dumps(r) for r in rows))
        run_dir, report = tmp_path / "run", tmp_path / "r.html"
        target = f"url={api.url}/v1,model=gpt-stand-in,key-env=STANDIN_KEY,price-in=0.15,price-out=0.6,name=closed"
        wrong = f"url={api.url},model=gpt-stand-in,key-env=WRONG_KEY,name=wrong-key"
        judge = f"url={api.url},model=judge-stand-in,key-env=STANDIN_KEY"
        env = {**os.environ, "STANDIN_KEY": key, "WRONG_KEY": "sk-wrong-" + "3" * 20,
               "PYTHONPATH": str(Path(__file__).resolve().parents[2])}  # fmt: skip
        done = subprocess.run(
            [*CLI, "eval", str(data), "-t", target, "-t", wrong, "--judge", judge,
             "--run-dir", str(run_dir), "--report", str(report), "--json"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        got = {t["target"]: t for t in json.loads(done.stdout)["targets"]}
        closed = got["closed"]
        assert closed["score"] == 1.0 and closed["by_scorer"]["judge"] == {"passed": 1, "n": 1}
        assert closed["cost_basis"] == "tokens"
        expected = (closed["tokens_in"] * 0.15 + closed["tokens_out"] * 0.6) / 1e6 / 3
        assert closed["usd_per_item"] == pytest.approx(expected, rel=1e-6)
        assert got["wrong-key"]["failures"] == {"http 401": 3}
        good = [h for h in api.auth_headers if h == f"Bearer {key}"]
        assert len(good) == 5  # 3 items, 1 judge call and the one answered 429, retried
        assert all(h.startswith("Bearer ") for h in api.auth_headers)
        assert {r.get("temperature") for r in api.requests} == {0.0}
        assert {r.get("seed") for r in api.requests} == {0}
        # never printed, never written (the wrong key neither, though the API echoed it)
        for secret in (key, env["WRONG_KEY"]):
            assert secret not in done.stdout and secret not in done.stderr
            for path in [*run_dir.rglob("*"), report]:
                if path.is_file():
                    assert secret not in path.read_text(errors="replace"), path
    finally:
        api.stop()


def test_a_missing_key_is_refused_before_any_request(tmp_path: Path) -> None:
    api = StandInApi("k", {}, "x")
    try:
        code, _, err = _cli("eval", str(SMALL), "-t", f"url={api.url},model=m,key-env=NOT_SET_ANYWHERE",
                            "--run-dir", str(tmp_path / "r"))  # fmt: skip
        assert code == 2 and "no API key in environment variable NOT_SET_ANYWHERE" in err
        assert api.requests == []
    finally:
        api.stop()


def test_a_model_target_is_deployed_for_the_run_and_removed(tmp_path: Path) -> None:
    from deployer.adapters.state_store import load_records

    data = tmp_path / "d.jsonl"
    data.write_text(SMALL.read_text().splitlines()[0] + "\n")
    code, out, err = _cli(
        "eval", str(data), "-t", "model=demo", "--profile", "cpu-x86-2c-8gb", "--runtime", "native",
        "--run-dir", str(tmp_path / "run"), "--json",
    )  # fmt: skip
    assert code == 0, err
    (t,) = json.loads(out)["targets"]
    assert t["kind"] == "model" and t["score"] == 1.0
    # self-hosted: the profile's USD/hour (0.096) times the time the request was in flight
    assert t["cost_basis"] == "hourly" and t["usd_per_item"] == pytest.approx(
        0.096 * t["busy_s"] / 3600, rel=1e-3
    )
    assert load_records() == []  # removed after the run


def test_a_deployment_target_uses_its_endpoint_and_key_file(tmp_path: Path) -> None:
    port = free_port()
    code, _, err = _cli("deploy", "demo", "--profile", "cpu-x86-2c-8gb", "--runtime", "native",
                        "--name", "e-dep", "--port", str(port), "--expose")  # fmt: skip
    assert code == 0, err
    try:
        data = tmp_path / "d.jsonl"
        data.write_text(SMALL.read_text().splitlines()[2] + "\n")  # letters: " F"
        run_dir = tmp_path / "run"
        code, out, err = _cli("eval", str(data), "-t", "e-dep", "--run-dir", str(run_dir), "--json")
        assert code == 0, err
        (t,) = json.loads(out)["targets"]
        assert (
            t["kind"] == "deployment"
            and t["answered"] == 1
            and t["by_scorer"]["exact"]["passed"] == 1
        )
        from deployer.adapters.state_store import load_record

        rec = load_record("e-dep")
        assert rec is not None and rec.api_key_path
        key = Path(rec.api_key_path).read_text().strip()
        assert key not in out and key not in err
        assert all(key not in p.read_text() for p in run_dir.iterdir())
    finally:
        _cli("down", "e-dep")


@pytest.fixture(scope="module")
def demo_q8_0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo re-quantized to Q8_0 (tests/integration/requant.py), made once per module."""
    from deployer.adapters.local_models import demo_model_path
    from tests.integration.requant import write_q8_0

    return write_q8_0(demo_model_path(), tmp_path_factory.mktemp("q8") / "demo-Q8_0.gguf")


def test_quants_of_one_hub_model_are_deployed_in_turn_and_scored_on_the_same_data(
    hub: Any, demo_q8_0: Path, tmp_path: Path
) -> None:
    from deployer.adapters.local_models import demo_model_path
    from deployer.adapters.state_store import load_records

    repo = "acme/gemma-3-270m-GGUF"
    files = {"gemma-3-270m-Q4_K_M.gguf": demo_model_path(), "gemma-3-270m-Q8_0.gguf": demo_q8_0}
    hub.add_repo(repo, files)
    run_dir = tmp_path / "run"
    code, out, err = _cli(
        "eval", str(SMALL), "--model", f"hf://{repo}", "--quants", "Q4_K_M,Q8_0",
        "--profile", "cpu-x86-2c-8gb", "--runtime", "native", "--run-dir", str(run_dir), "--json",
    )  # fmt: skip
    assert code == 0, err
    targets = json.loads(out)["targets"]
    labels = [t["target"] for t in targets]
    assert labels == [f"hf://{repo}:Q4_K_M", f"hf://{repo}:Q8_0"]
    items = {json.loads(line)["id"] for line in SMALL.read_text().splitlines()}
    for t in targets:
        assert t["kind"] == "model" and t["answered"] == len(items) and t["failed"] == 0
        assert set(_item_scores(run_dir, t["target"])) == items  # the same data for both
    # each file came from the Hub whole, once; nothing is left running or recorded
    for name, path in files.items():
        assert hub.served(repo, name) >= path.stat().st_size
    assert load_records() == []
    # Q8_0 re-made from the Q4_K_M holds what Q4_K_M knew: the two agree on these easy items
    q4, q8 = (_item_scores(run_dir, label) for label in labels)
    assert sum(q4[i] == q8[i] for i in items) >= len(items) - 1
