"""Golden plans for the classic questions, plus the properties each answer must have."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deployer.cli import wiring
from deployer.cli.app import app

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "plan"

CASES: dict[str, list[str]] = {
    "mistral-7b-a10g": ["mistral-7b-instruct-v0.3", "--profile", "nvidia-a10g-24gb"],
    "llama31-8b-a10g": ["llama-3.1-8b-instruct", "--profile", "nvidia-a10g-24gb"],
    "llama31-8b-l4": ["llama-3.1-8b-instruct", "--profile", "nvidia-l4-24gb"],
    "llama31-70b-a100-80gb": ["llama-3.1-70b-instruct", "--profile", "nvidia-a100-80gb"],
    "llama31-70b-2x-a100-80gb": ["llama-3.1-70b-instruct", "--profile", "nvidia-2x-a100-80gb"],
    "llama31-70b-m2-ultra": ["llama-3.1-70b-instruct", "--profile", "apple-m2-ultra-192gb"],
    "llama31-405b-a100-80gb": ["llama-3.1-405b-instruct", "--profile", "nvidia-a100-80gb"],
    "qwen25-7b-cpu-16c": ["qwen2.5-7b-instruct", "--profile", "cpu-x86-16c-64gb"],
    "llama31-8b-a10g-128k": [
        "llama-3.1-8b-instruct",
        "--profile",
        "nvidia-a10g-24gb",
        "--ctx",
        "131072",
    ],
    "gpt-oss-20b-l4-ollama": ["gpt-oss-20b", "--profile", "nvidia-l4-24gb", "--backend", "ollama"],
}


class _FixedDay:
    """The day these goldens were written: API prices' "old" flag depends on the date."""

    def utc_now(self) -> datetime:
        return datetime(2026, 11, 29, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fixed_day(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wiring, "clock", _FixedDay)


def _plan(args: list[str]) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(app, ["plan", *args, "--json"])
    return result.exit_code, json.loads(result.stdout)


@pytest.mark.parametrize("case", sorted(CASES))
def test_plan_matches_golden(case: str, update_golden: bool) -> None:
    code, got = _plan(CASES[case])
    assert code == (0 if got["fits"] else 1)
    path = GOLDEN / f"{case}.json"
    if update_golden:
        path.write_text(json.dumps(got, indent=2) + "\n")
    assert path.exists(), f"no golden file {path}; run pytest --update-golden"
    assert got == json.loads(path.read_text()), f"plan changed; rerun with --update-golden ({path})"


def test_every_device_in_a_fitting_plan_is_within_budget() -> None:
    for args in CASES.values():
        _, got = _plan(args)
        if got["fits"]:
            assert all(d["total_bytes"] <= d["budget_bytes"] for d in got["devices"])
            assert got["memory"]["total_bytes"] <= got["memory"]["budget_bytes"]


def test_8b_on_a10g_fits_fully_at_high_quality() -> None:
    _, got = _plan(CASES["llama31-8b-a10g"])
    assert got["fits"] and got["n_gpu_layers"] == got["n_layers_total"] == 33
    assert got["quant"] in ("Q8_0", "Q6_K")
    assert got["license"]["restricts_use"] is True
    assert got["cost_per_million_tokens_usd"] is not None
    # F16 is never chosen while Q8_0 exists, and says why.
    f16 = [a for a in got["alternatives"] if a["quant"] == "F16"]
    assert f16 and "Q8_0" in f16[0]["reason"]


def test_l4_is_slower_than_a10g_for_the_same_plan() -> None:
    _, a10g = _plan(CASES["llama31-8b-a10g"] + ["--quant", "Q4_K_M"])
    _, l4 = _plan(CASES["llama31-8b-l4"] + ["--quant", "Q4_K_M"])
    assert a10g["predicted_tokens_per_s"] > 1.5 * l4["predicted_tokens_per_s"]


def test_70b_splits_across_two_gpus_with_better_quant() -> None:
    _, one = _plan(CASES["llama31-70b-a100-80gb"])
    _, two = _plan(CASES["llama31-70b-2x-a100-80gb"])
    gpus = [d for d in two["devices"] if d["name"] != "host"]
    assert len(gpus) == 2 and all(d["layers"] > 30 for d in gpus)
    order = ["Q2_K", "Q3_K_M", "IQ4_XS", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"]
    assert order.index(two["quant"]) >= order.index(one["quant"])


def test_405b_on_one_a100_is_refused_and_names_what_works() -> None:
    code, got = _plan(CASES["llama31-405b-a100-80gb"])
    assert code == 1 and got["fits"] is False
    assert got["suggested_profiles"], "a bigger profile must be named"
    assert any(p.startswith(("nvidia-8x", "apple-m3-ultra-512")) for p in got["suggested_profiles"])
    assert any(a["n_gpu_layers"] == -1 for a in got["alternatives"])


def test_cpu_plan_never_picks_f16_and_uses_ram() -> None:
    _, got = _plan(CASES["qwen25-7b-cpu-16c"])
    assert got["fits"] and got["quant"] not in ("F16", "BF16")
    assert got["n_gpu_layers"] == 0
    assert [d["name"] for d in got["devices"]] == ["host"]


def test_long_context_costs_kv_and_may_lower_the_quant() -> None:
    _, short = _plan(CASES["llama31-8b-a10g"])
    _, long = _plan(CASES["llama31-8b-a10g-128k"])
    assert long["memory"]["kv_cache_bytes"] == 16 * 1024**3
    assert long["memory"]["kv_cache_bytes"] > 10 * short["memory"]["kv_cache_bytes"]


def test_ollama_allocates_context_per_slot() -> None:
    _, one = _plan(["gpt-oss-20b", "--profile", "nvidia-l4-24gb", "--backend", "ollama"])
    _, four = _plan(
        ["gpt-oss-20b", "--profile", "nvidia-l4-24gb", "--backend", "ollama", "--parallel", "4"]
    )
    assert four["memory"]["kv_cache_bytes"] > 2 * one["memory"]["kv_cache_bytes"]


def test_heavy_quality_loss_is_warned_with_better_machines() -> None:
    code, got = _plan(["mixtral-8x7b-instruct-v0.1", "--profile", "nvidia-a10g-24gb"])
    assert code == 0 and got["quant"] == "Q2_K"
    assert got["warnings"] and "Q2_K" in got["warnings"][0]
    assert got["suggested_profiles"]
    assert all(p.startswith("nvidia-") for p in got["suggested_profiles"])


def test_models_list_filters_by_what_fits() -> None:
    runner = CliRunner()
    small = json.loads(
        runner.invoke(app, ["models", "list", "-p", "nvidia-t4-16gb", "--json"]).stdout
    )
    big = json.loads(
        runner.invoke(app, ["models", "list", "-p", "nvidia-h200-141gb", "--json"]).stdout
    )
    small_ids = {m["id"] for m in small}
    big_ids = {m["id"] for m in big}
    assert small_ids < big_ids
    assert "llama-3.1-8b-instruct" in small_ids and "llama-3.1-70b-instruct" not in small_ids
    assert "llama-3.1-70b-instruct" in big_ids and "llama-3.1-405b-instruct" not in big_ids
    for m in small:
        assert m["fit"]["profile"] == "nvidia-t4-16gb"
        assert m["fit"]["total_bytes"] > 0
    long_ctx = json.loads(
        runner.invoke(
            app, ["models", "list", "-p", "nvidia-t4-16gb", "--ctx", "65536", "--json"]
        ).stdout
    )
    assert {m["id"] for m in long_ctx} < small_ids
    assert all(m["fit"]["ctx"] == 65536 for m in long_ctx)
