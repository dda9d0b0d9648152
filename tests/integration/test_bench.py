"""`deployer bench` against the real llama-server image serving the demo at 4 slots: the sweep
1, 2, 4 read from /props, throughput that rises with streams, ordered percentiles, the API key
from the record, a wrong key and a too-small timeout counted as errors, and what is kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deployer.cli.app import app
from tests.integration.benchkit import BenchDeployment

pytestmark = pytest.mark.docker

# The sweep's shape is under test, not this shared 2-core machine's speed: a lenient target.
FAST = ["--prompt-tokens", "64", "--output-tokens", "48", "--requests", "8",
        "--max-ttft-s", "120", "--min-stream-tokens-per-s", "0.5"]  # fmt: skip


def _bench(dep: BenchDeployment, mp: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    mp.setenv("DEPLOYER_STATE_DIR", str(dep.state))
    r = CliRunner().invoke(app, ["bench", dep.name, *args])
    return r.exit_code, r.stdout, r.stderr


def test_the_sweep_rises_with_streams_and_is_kept(
    bench_deployment: BenchDeployment, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    report = tmp_path / "bench.html"
    # Other jobs on these 2 shared cores can swamp one sweep: a sweep whose 4 streams do not
    # beat 1 is run once more before it fails (4 streams batch; alone they always win here).
    for _attempt in range(2):
        code, out, err = _bench(bench_deployment, monkeypatch, *FAST, "--json",
                                "--report", str(report))  # fmt: skip
        assert code == 0, err
        doc = json.loads(out)
        levels = {lv["concurrency"]: lv for lv in doc["levels"]}
        assert list(levels) == [1, 2, 4], doc["stopped"]
        if levels[4]["aggregate_tokens_per_s"] > levels[1]["aggregate_tokens_per_s"]:
            break
    assert doc["server"] == {"total_slots": 4, "ctx_per_slot": 2048}
    assert levels[4]["aggregate_tokens_per_s"] > levels[1]["aggregate_tokens_per_s"]
    for lv in levels.values():
        assert lv["errors"] == {} and lv["completed"] == 8  # the record's key was used
        assert lv["output_tokens"] == 8 * 48  # ignore_eos: every answer full length
        for figure in ("ttft_s", "e2e_s", "inter_token_s"):
            p = lv[figure]
            assert 0 < p["p50"] <= p["p95"] <= p["p99"], (figure, p)
        assert lv["prefill_tokens_per_s"] > 0 and lv["server_stream_tokens_per_s"] > 0
    assert doc["best"] is not None and doc["profile"]["id"] == "cpu-x86-2c-8gb"
    # kept: the record's summary, and `ps --json` shows it
    ps = json.loads(CliRunner().invoke(app, ["ps", "--json"]).stdout)
    (row,) = [r for r in ps if r["name"] == bench_deployment.name]
    assert row["bench"]["concurrency"] == doc["best"]["concurrency"]
    assert row["bench"]["aggregate_tokens_per_s"] == doc["best"]["aggregate_tokens_per_s"]
    assert row["profile"] == "cpu-x86-2c-8gb"
    table = CliRunner().invoke(app, ["ps"]).stdout
    assert f"@{doc['best']['concurrency']}" in table
    # the key is used, never shown or written
    key = bench_deployment.key_path.read_text().strip()
    page = report.read_text()
    assert "<svg" in page and key not in page and key not in out and key not in err
    for f in bench_deployment.state.rglob("*.json"):
        assert key not in f.read_text()


def test_a_wrong_key_is_counted_not_a_crash(
    bench_deployment: BenchDeployment, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wrong = tmp_path / "key"
    wrong.write_text("not-the-key\n")
    code, out, err = _bench(bench_deployment, monkeypatch, "--concurrency", "1,2", "--requests",
                            "3", "--api-key-file", str(wrong), "--json")  # fmt: skip
    assert code == 1 and "Traceback" not in err
    doc = json.loads(out)
    assert doc["errors"] == {"http_401": 3} and doc["warmup_error"] == "http_401"
    assert [lv["concurrency"] for lv in doc["levels"]] == [1]  # it stopped: nothing met the target
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: no request to t-bench completed") and "API key" in last
    assert "not-the-key" not in out + err


def test_a_too_small_timeout_is_counted_as_timeouts(
    bench_deployment: BenchDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = _bench(bench_deployment, monkeypatch, "--concurrency", "2", "--requests",
                            "2", "--timeout", "0.05", "--output-tokens", "200", "--json")  # fmt: skip
    assert code == 1 and "Traceback" not in err, err
    doc = json.loads(out)
    assert doc["levels"][0]["errors"] == {"timeout": 2}


def test_bad_input_is_one_line(
    bench_deployment: BenchDeployment, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"messages": "no"}\n')
    for args in (["--concurrency", "4,2"], ["--prompts", str(bad)], ["--requests", "0"],
                 ["--report", str(tmp_path / "r.pdf")], ["--timeout", "nan"]):  # fmt: skip
        code, _, err = _bench(bench_deployment, monkeypatch, *args)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (args, err)
    monkeypatch.setenv("DEPLOYER_STATE_DIR", str(bench_deployment.state))
    r = CliRunner().invoke(app, ["bench", "t-bnch"])
    assert r.exit_code != 0 and "did you mean 't-bench'" in r.stderr
