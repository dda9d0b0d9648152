"""Throughput under load, traffic sizing, API prices and calibrations, as `plan` uses them."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from deployer.adapters.calibration_store import FileCalibrationStore
from deployer.adapters.data_files import data_dir
from deployer.cli import plan as plan_cli
from deployer.cli import wiring
from deployer.cli.app import app
from deployer.core.errors import InvalidDataFile, InvalidRequest
from deployer.core.fit import traffic as traffic_mod
from deployer.core.fit.api_prices import ApiPrice, load_prices, select_prices
from deployer.core.fit.calibration import Calibration, CalibrationKey, NoCalibrations
from deployer.core.fit.plan import (
    EXTRA_STREAM_LATENCY,
    LAYER_LATENCY_S,
    Option,
    PlanRequest,
    evaluate_option,
    machine_spec,
    make_plan,
)
from deployer.core.fit.throughput import (
    MODEL_VERSION,
    attention_flops,
    efficiency_for,
    expert_share,
    experts_touched,
    predict_load,
)
from deployer.core.fit.traffic import (
    TrafficRequest,
    compare_apis,
    option_with_slots,
    plan_economics,
    size_traffic,
)
from deployer.core.hardware.profiles import Profile, get_profile
from deployer.core.model.catalog import get_model
from deployer.core.model.weights import base_bpw, facts_from_catalog
from tests.unit.in_memory import MemoryDataSource

TODAY = date(2026, 11, 29)


def _plan(model: str, profile: str, quant: str | None = None, parallel: int = 1) -> Any:
    entry = get_model(model)
    facts = [facts_from_catalog(entry, q) for q in entry.quants]
    return make_plan(
        model, facts, get_profile(profile), PlanRequest(quant=quant, parallel=parallel)
    )


def _load(option: Option, profile: Profile, slots: int, p: int = 1000, o: int = 300) -> Any:
    eff = efficiency_for(profile, None)
    return predict_load(
        option, profile, slots=slots, prompt_tokens=p, output_tokens=o, efficiency=eff
    )


# --- the throughput model ---------------------------------------------------------------------


def test_aggregate_rises_with_slots_and_saturates_at_the_compute_ceiling() -> None:
    result = _plan("qwen2.5-7b-instruct", "cpu-x86-16c-64gb")
    prof, opt = result.profile, result.chosen
    loads = [_load(opt, prof, b, p=100, o=100) for b in (1, 2, 4, 8, 64, 128, 256)]
    aggs = [x.aggregate_tokens_per_s for x in loads]
    assert aggs[1] > 1.8 * aggs[0]  # memory-bound: a second stream is nearly free
    assert not loads[0].compute_bound and loads[-1].compute_bound
    # The ceiling by hand: peak FLOPS x compute efficiency / (2 x active parameters); attention
    # only adds FLOPs, so the aggregate stays below it and, saturated, close to it.
    params = (sum(opt.facts.weights.block_bytes) + opt.facts.weights.output_bytes) * 8
    params /= base_bpw(opt.facts.quant)
    ceiling = prof.cpu_peak_flops()[0] * efficiency_for(prof, None).compute / (2 * params)
    assert aggs[-1] <= ceiling
    assert aggs[-1] > 0.9 * ceiling
    # CPU cores add memory time to compute time, so the ceiling is approached, not reached
    assert aggs[-1] / aggs[-2] < 1.05


def test_per_stream_falls_as_slots_share_the_machine() -> None:
    result = _plan("llama-3.1-8b-instruct", "nvidia-l4-24gb")
    one, many = (_load(result.chosen, result.profile, b) for b in (1, 32))
    assert many.per_stream_tokens_per_s < one.per_stream_tokens_per_s
    assert many.aggregate_tokens_per_s > 5 * one.aggregate_tokens_per_s
    assert many.ttft_s > one.ttft_s
    assert one.e2e_s == pytest.approx(one.ttft_s + 299 / one.per_stream_tokens_per_s)
    assert one.requests_per_s == pytest.approx(1 / one.e2e_s)


PAIRS = [
    ("llama-3.1-8b-instruct", "nvidia-l4-24gb"),
    ("qwen2.5-7b-instruct", "cpu-x86-16c-64gb"),
    ("gpt-oss-20b", "nvidia-l4-24gb"),
    ("llama-3.1-70b-instruct", "apple-m2-ultra-192gb"),
    ("mixtral-8x7b-instruct-v0.1", "nvidia-a10g-24gb"),
]
_PLANS: dict[tuple[str, str], Any] = {}


def _cached(pair: tuple[str, str]) -> Any:
    if pair not in _PLANS:
        _PLANS[pair] = _plan(*pair)
    return _PLANS[pair]


@given(
    pair=st.sampled_from(PAIRS),
    b=st.integers(1, 255),
    more=st.integers(1, 64),
    prompt=st.integers(0, 4000),
    output=st.integers(1, 2000),
)
def test_aggregate_never_falls_and_per_stream_never_rises_with_slots(
    pair: tuple[str, str], b: int, more: int, prompt: int, output: int
) -> None:
    result = _cached(pair)
    lo = _load(result.chosen, result.profile, b, prompt, output)
    hi = _load(result.chosen, result.profile, min(b + more, 256), prompt, output)
    assert hi.aggregate_tokens_per_s >= lo.aggregate_tokens_per_s * (1 - 1e-9)
    assert hi.per_stream_tokens_per_s <= lo.per_stream_tokens_per_s * (1 + 1e-9)
    assert lo.prefill_tokens_per_s == pytest.approx(hi.prefill_tokens_per_s)


def test_moe_reads_more_experts_as_slots_grow_and_all_of_them_at_large_batches() -> None:
    result = _cached(("gpt-oss-20b", "nvidia-l4-24gb"))
    arch = result.chosen.facts.arch
    assert arch.n_expert and arch.n_expert_used
    shares = [experts_touched(arch, b) for b in (1, 2, 8, 64, 256)]
    assert shares[0] == pytest.approx(arch.n_expert_used / arch.n_expert)
    assert shares == sorted(shares) and shares[-1] == pytest.approx(1.0, abs=1e-6)
    # At a large batch the MoE reads its weights like a dense model of the same bytes would:
    # its step equals the step of the same layout with the experts made dense.
    dense_arch = arch.model_copy(update={"n_expert": 0, "n_expert_used": 0})
    dense_facts = result.chosen.facts.model_copy(update={"arch": dense_arch})
    dense = replace(result.chosen, facts=dense_facts)
    big_moe = _load(result.chosen, result.profile, 256, 0, 1)
    big_dense = _load(dense, result.profile, 256, 0, 1)
    # Same bytes read; the dense twin does more FLOPs (all experts), so it is never faster.
    assert big_moe.per_stream_tokens_per_s >= big_dense.per_stream_tokens_per_s
    one_moe = _load(result.chosen, result.profile, 1, 0, 1)
    one_dense = _load(dense, result.profile, 1, 0, 1)
    assert one_moe.per_stream_tokens_per_s > 2 * one_dense.per_stream_tokens_per_s
    assert experts_touched(dense_arch, 7) == 1.0


def test_an_moe_file_reads_its_dense_weights_whole_and_its_routed_experts_by_share() -> None:
    # A file's tensor table says which bytes are routed experts: a dense leading block, the
    # attention and the shared experts are read whole every token, not at the experts' share.
    result = _plan("qwen3-30b-a3b", "cpu-x86-16c-64gb")
    opt: Option = result.chosen
    profile: Profile = result.profile
    w, arch = opt.facts.weights, opt.facts.arch
    blocks = w.block_bytes
    routed = [b * 9 // 10 for b in blocks]

    def with_experts(experts: list[int] | None) -> Option:
        layout = w.model_copy(update={"expert_bytes": experts})
        return replace(opt, facts=opt.facts.model_copy(update={"weights": layout}))

    base = _load(with_experts(routed), profile, 1, p=0, o=1)
    dense_lead = _load(with_experts([0, *routed[1:]]), profile, 1, p=0, o=1)
    share = arch.n_expert_used / arch.n_expert
    bandwidth = profile.cpu_bandwidth_gbps * 1e9 * efficiency_for(profile, None).memory
    extra = (dense_lead.step_memory_s - base.step_memory_s) * bandwidth
    assert extra == pytest.approx(routed[0] * (1 - share), rel=1e-9)
    assert dense_lead.prefill_tokens_per_s < base.prefill_tokens_per_s  # more active weights
    # A layout without experts' bytes (a catalog estimate) falls back on the architecture's share
    estimated = _load(with_experts(None), profile, 1, p=0, o=1)
    by_share = [round(b * expert_share(arch)) for b in blocks]
    assert estimated.step_memory_s == pytest.approx(
        _load(with_experts(by_share), profile, 1, p=0, o=1).step_memory_s, rel=1e-6
    )


def test_attention_flops_follow_each_layers_head_size() -> None:
    # Gemma 4's windowed layers have their own head size: a token's attention over them is
    # counted at that size, over the window.
    arch = _plan("qwen2.5-7b-instruct", "cpu-x86-16c-64gb").chosen.facts.arch
    n = arch.n_layer
    swa = arch.model_copy(
        update={"sliding_window": 512, "swa_layers": [True] + [False] * (n - 1),
                "head_dim_k_swa": 32, "head_dim_v_swa": 16}
    )  # fmt: skip
    assert attention_flops(swa, [0], 4096.0) == 2.0 * arch.n_head * 512 * (32 + 16)
    k, v = arch.head_dim_k, arch.head_dim_v
    assert attention_flops(swa, [1], 4096.0) == 2.0 * arch.n_head * 4096 * (k + v)


def test_partial_offload_runs_the_host_layers_at_cpu_speed() -> None:
    prof = get_profile("nvidia-a10g-24gb")
    entry = get_model("llama-3.1-70b-instruct")
    facts = facts_from_catalog(entry, "Q4_K_M")
    spec = machine_spec(prof)
    base = make_plan(entry.id, [facts], prof, PlanRequest()).chosen.settings
    partial = evaluate_option(facts, replace(base, n_gpu_layers=30), prof, spec)
    full = evaluate_option(facts, replace(base, n_gpu_layers=81), prof, spec)
    assert partial.memory.host.layers > 0 and full.memory.host.layers == 0
    slow, fast = _load(partial, prof, 1), _load(full, prof, 1)
    assert slow.per_stream_tokens_per_s < fast.per_stream_tokens_per_s / 3
    host_bytes = sum(facts.weights.block_bytes[i] for i in partial.memory.host.blocks)
    # the host's weights alone, at the CPU's bandwidth and efficiency, bound the step below
    assert 1 / slow.per_stream_tokens_per_s >= host_bytes / (prof.cpu_bandwidth_gbps * 1e9 * 0.5)
    assert slow.prefill_tokens_per_s < fast.prefill_tokens_per_s


def test_a_gpu_outruns_a_cpu_on_the_same_model() -> None:
    cpu = _plan("qwen2.5-7b-instruct", "cpu-x86-16c-64gb", quant="Q4_K_M")
    gpu = _plan("qwen2.5-7b-instruct", "nvidia-l4-24gb", quant="Q4_K_M")
    c, g = _load(cpu.chosen, cpu.profile, 8), _load(gpu.chosen, gpu.profile, 8)
    assert g.aggregate_tokens_per_s > 3 * c.aggregate_tokens_per_s
    assert g.prefill_tokens_per_s > 20 * c.prefill_tokens_per_s
    assert efficiency_for(cpu.profile, None).memory == 0.5
    assert efficiency_for(gpu.profile, None).memory == 0.7


def test_a_profile_without_peak_flops_gets_the_stated_derivation() -> None:
    prof = get_profile("nvidia-l4-24gb")
    assert prof.gpu is not None
    bare = prof.model_copy(
        update={"gpu": prof.gpu.model_copy(update={"peak_fp16_tflops": None}),
                "cpu_peak_gflops": None}
    )  # fmt: skip
    flops, stated = bare.device_peak_flops()
    assert not stated and flops == pytest.approx(300e9 * 100)
    cpu, stated = bare.cpu_peak_flops()
    assert not stated and cpu == pytest.approx(4 * 2.5e9 * 16)  # avx2, 4 CPUs


# --- traffic ----------------------------------------------------------------------------------


def test_more_traffic_needs_more_replicas_never_more_slots_than_fit() -> None:
    result = _plan("llama-3.1-8b-instruct", "nvidia-l4-24gb")
    eff = efficiency_for(result.profile, None)
    counts, most = [], 0
    for rpd in (1_000, 100_000, 1_000_000, 10_000_000):
        sized = size_traffic(result.chosen, result.profile, eff, TrafficRequest(rpd))
        assert sized is not None and sized.meets_targets
        assert sized.load.slots <= sized.max_slots_fitting
        cap = sized.replicas * sized.load.requests_per_s
        assert cap >= sized.peak_requests_per_s
        assert (sized.replicas - 1) * sized.load.requests_per_s < sized.peak_requests_per_s
        counts.append(sized.replicas)
        most = sized.max_slots_fitting
    assert counts == sorted(counts) and counts[-1] > counts[0]
    assert option_with_slots(result.chosen, result.profile, most, 1300).fits
    if most < 256:
        assert not option_with_slots(result.chosen, result.profile, most + 1, 1300).fits


def test_a_single_slot_too_slow_for_the_targets_is_flagged() -> None:
    result = _plan("qwen2.5-7b-instruct", "cpu-x86-16c-64gb")
    eff = efficiency_for(result.profile, None)
    sized = size_traffic(result.chosen, result.profile, eff, TrafficRequest(1000, max_ttft_s=1))
    assert sized is not None and not sized.meets_targets and sized.load.slots == 1
    assert any("--max-ttft-s 1" in p for p in sized.problems)
    econ = plan_economics(
        result, calibrations=NoCalibrations(), traffic=TrafficRequest(1000, max_ttft_s=1),
        prices=[], today=TODAY,
    )  # fmt: skip
    assert any("targets not met" in w for w in econ.warnings)
    assert econ.as_dict()["traffic"]["meets_targets"] is False


@pytest.mark.parametrize(
    "bad",
    [
        TrafficRequest(0),
        TrafficRequest(-5),
        TrafficRequest(math.inf),
        TrafficRequest(10, output_tokens=0),
        TrafficRequest(10, peak_factor=0.5),
        TrafficRequest(10, max_ttft_s=0),
        TrafficRequest(10, min_stream_tokens_per_s=math.nan),
    ],
)
def test_impossible_traffic_is_refused(bad: TrafficRequest) -> None:
    with pytest.raises(InvalidRequest):
        bad.check()


def test_the_cli_defaults_are_the_documented_ones() -> None:
    import inspect

    params = inspect.signature(plan_cli.plan).parameters
    t = TrafficRequest()
    assert params["prompt_tokens"].default == t.prompt_tokens == traffic_mod.DEFAULT_PROMPT_TOKENS
    assert params["output_tokens"].default == t.output_tokens
    assert params["peak_factor"].default == t.peak_factor
    assert params["max_ttft_s"].default == t.max_ttft_s
    assert params["min_stream_tokens_per_s"].default == t.min_stream_tokens_per_s


# --- API prices -------------------------------------------------------------------------------


def _price_text(**changes: object) -> str:
    text = (Path(str(data_dir("prices"))) / "openai-gpt-4o.yaml").read_text(encoding="utf-8")
    for key, value in changes.items():
        lines = [ln for ln in text.splitlines() if not ln.startswith(f"{key}:")]
        text = "\n".join([*lines, f"{key}: {value}"]) + "\n"
    return text


def _prices(text: str) -> dict[str, ApiPrice]:
    return load_prices(MemoryDataSource(files={"prices": [("u/openai-gpt-4o.yaml", text)]}))


def test_shipped_prices_have_the_rows_asked_for() -> None:
    prices = load_prices()
    for row in ("openai-gpt-4o", "openai-gpt-4o-mini", "openai-gpt-4.1", "openai-gpt-4.1-mini",
                "anthropic-claude-sonnet-4", "anthropic-claude-haiku-3.5",
                "google-gemini-2.0-flash", "google-gemini-2.5-flash"):  # fmt: skip
        assert row in prices and prices[row].source.startswith("https://")
    assert prices["openai-gpt-4o"].usd_per_request(1000, 300) == pytest.approx(0.0055)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("surprise", "1"),
        ("usd_per_million_input_tokens", "-1"),
        ("usd_per_million_output_tokens", ".inf"),
        ("usd_per_million_output_tokens", ".nan"),
        ("usd_per_million_input_tokens", "1e308"),
        ("usd_per_million_input_tokens", "'2.5'x"),
        ("as_of", "'2025-13'"),
        ("as_of", "'yesterday'"),
        ("as_of", "'1999-01-01'"),
        ("source", "'javascript:alert(1)'"),
        ("model", '"[red]x\\n"'),
    ],
)
def test_hostile_price_rows_are_refused_naming_the_file(key: str, value: str) -> None:
    with pytest.raises(InvalidDataFile) as err:
        _prices(_price_text(**{key: value}))
    assert err.value.path == "u/openai-gpt-4o.yaml"


def test_a_user_row_overrides_the_shipped_one_and_unknown_ids_are_refused() -> None:
    user = _price_text(usd_per_million_input_tokens=1.0)
    assert _prices(user)["openai-gpt-4o"].usd_per_million_input_tokens == 1.0
    with pytest.raises(InvalidRequest) as err:
        select_prices(load_prices(), ["openai-gpt-4"])
    assert "openai-gpt-4o" in err.value.message()
    picked = select_prices(load_prices(), ["openai-gpt-4o", "openai-gpt-4o"])
    assert [p.id for p in picked] == ["openai-gpt-4o"]


def test_old_prices_are_flagged_by_their_age() -> None:
    old = _prices(_price_text(as_of="'2025-06'"))["openai-gpt-4o"]
    fresh = _prices(_price_text(as_of="'2026-10-01'"))["openai-gpt-4o"]
    assert old.is_old(TODAY) and not fresh.is_old(TODAY)
    rows = compare_apis([old, fresh], TODAY, TrafficRequest(), None, 1.0)
    assert [r.as_dict()["old"] for r in rows] == [True, False]


def test_break_even_matches_the_hand_computation() -> None:
    # L4 at $0.8048/h; GPT-4o at $2.50 in / $10 out per 1M; 1000 in + 300 out a request.
    price = load_prices()["openai-gpt-4o"]
    t = TrafficRequest(20_000)
    (row,) = compare_apis([price], TODAY, t, 0.8048, replica_requests_per_s=0.5)
    per_request = 1000 * 2.5 / 1e6 + 300 * 10 / 1e6  # $0.0055
    assert row.usd_per_request == pytest.approx(per_request)
    assert row.usd_per_day == pytest.approx(per_request * 20_000)  # $110
    assert row.break_even_requests_per_day == pytest.approx(0.8048 * 24 / per_request)  # 3511.9
    assert row.replica_capacity_requests_per_day == pytest.approx(0.5 * 86_400 / 3)  # 14,400
    assert row.break_even_above_capacity is False
    (slow,) = compare_apis([price], TODAY, t, 0.8048, replica_requests_per_s=0.01)  # 288/day
    assert slow.break_even_above_capacity is True
    (unpriced,) = compare_apis([price], TODAY, t, None, replica_requests_per_s=0.5)
    assert unpriced.break_even_requests_per_day is None


def test_traffic_cost_is_split_by_machine_time() -> None:
    result = _plan("llama-3.1-8b-instruct", "nvidia-l4-24gb")
    eff = efficiency_for(result.profile, None)
    sized = size_traffic(result.chosen, result.profile, eff, TrafficRequest(50_000))
    assert sized is not None
    d = sized.as_dict()
    per_day = sized.replicas * 0.8048 * 24
    assert d["usd_per_day"] == pytest.approx(per_day, abs=0.01)
    assert d["usd_per_request"] == pytest.approx(per_day / 50_000, rel=1e-4)
    share = sized.input_time_share()
    prefill_s = 1000 / sized.load.prefill_tokens_per_s
    decode_s = 300 / sized.load.aggregate_tokens_per_s
    assert share == pytest.approx(prefill_s / (prefill_s + decode_s))
    spent = d["usd_per_million_input_tokens"] * 1000 + d["usd_per_million_output_tokens"] * 300
    # the per-1M prices are rounded to cents where above $1: 0.5% at most
    assert spent / 1e6 == pytest.approx(per_day / 50_000, rel=5e-3)


# --- calibration ------------------------------------------------------------------------------


def _cli(*args: str) -> tuple[int, dict[str, Any]]:
    out = CliRunner().invoke(app, ["plan", *args, "--json"])
    return out.exit_code, json.loads(out.stdout)


ARGS = ("llama-3.1-8b-instruct", "--profile", "nvidia-l4-24gb", "--parallel", "4")


def test_a_gpu_calibration_fitted_to_the_older_model_is_not_used_and_plan_says_so() -> None:
    """GPU calibrations saved before the per-layer kernel time (version 1) had that time folded
    into their memory efficiency: used now, they would count it twice."""
    _, before = _cli(*ARGS)
    key = CalibrationKey("nvidia-l4-24gb", "llama-3.1-8b-instruct", before["quant"], "llamacpp")
    FileCalibrationStore().remember(Calibration(key, 0.35, 0.2, "2026-11-01", "l4-old"))
    _, after = _cli(*ARGS)
    assert after["load"]["efficiency"] == before["load"]["efficiency"]
    assert (
        "2026-11-01 was fitted to an older throughput model" in after["load"]["efficiency_source"]
    )
    cpu = CalibrationKey("cpu-x86-2c-8gb", "demo", "Q4_K_M", "llamacpp")
    FileCalibrationStore().remember(Calibration(cpu, 0.3, 0.3, "2026-11-01", "cpu-old"))
    code, demo = _cli("demo", "--profile", "cpu-x86-2c-8gb")
    assert code == 0 and demo["load"]["efficiency_source"] == "calibrated by bench on 2026-11-01"


def test_a_calibration_changes_the_prediction_and_says_so() -> None:
    _, before = _cli(*ARGS)
    key = CalibrationKey("nvidia-l4-24gb", "llama-3.1-8b-instruct", before["quant"], "llamacpp")
    cal = Calibration(key, 0.35, 0.2, "2026-11-01", "l4-test", model_version=MODEL_VERSION["gpu"])
    FileCalibrationStore().remember(cal)
    _, after = _cli(*ARGS)
    _, ignored = _cli(*ARGS, "--no-calibration")
    assert before["load"]["efficiency_source"] == "default assumption"
    assert after["load"]["efficiency_source"] == "calibrated by bench on 2026-11-01"
    assert after["load"]["efficiency"] == {"memory": 0.35, "compute": 0.2}
    ratio = after["load"]["per_stream_tokens_per_s"] / before["load"]["per_stream_tokens_per_s"]
    assert 0.45 < ratio < 0.55  # memory-bound: half the efficiency, about half the speed
    assert after["load"]["prefill_tokens_per_s"] < before["load"]["prefill_tokens_per_s"]
    assert ignored["load"] == before["load"]
    # the single-stream field keeps its meaning (no calibration, one stream)
    assert after["predicted_tokens_per_s"] == before["predicted_tokens_per_s"]
    text = CliRunner().invoke(app, ["plan", *ARGS]).stdout
    assert "calibrated by bench on 2026-11-01" in " ".join(text.split())


def test_a_corrupt_calibration_file_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    store = FileCalibrationStore()
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_text("{not json")
    code, got = _cli(*ARGS)
    assert code == 0
    assert got["load"]["efficiency_source"] == "default assumption"
    assert any("calibration ignored" in w for w in got["warnings"])


KEY = CalibrationKey("p", "m", "Q4_K_M", "llamacpp")


def test_the_store_remembers_replaces_and_keeps_its_file_private(tmp_path: Path) -> None:
    store = FileCalibrationStore(tmp_path / "c.json")
    assert store.lookup(KEY) is None
    store.remember(Calibration(KEY, 0.6, 0.3, "2026-11-01"))
    store.remember(Calibration(KEY, 0.65, 0.31, "2026-11-02", "dep"))
    other = replace(KEY, quant="Q8_0")
    store.remember(Calibration(other, 0.5, 0.2, "2026-11-03"))
    again = FileCalibrationStore(tmp_path / "c.json")
    got = again.lookup(KEY)
    assert got is not None and got.measured_on == "2026-11-02" and got.deployment == "dep"
    assert again.lookup(other) is not None and not again.warnings
    assert got.model_version == 1  # what it was made with; kept across a save
    store.remember(Calibration(other, 0.5, 0.2, "2026-11-04", model_version=2))
    assert FileCalibrationStore(tmp_path / "c.json").lookup(other).model_version == 2  # type: ignore[union-attr]
    assert (tmp_path / "c.json").stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError):
        store.remember(Calibration(KEY, math.nan, 0.3, "2026-11-01"))


def _entry(**changes: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "profile": "p", "model": "m", "quant": "Q4_K_M", "backend": "llamacpp",
        "memory_efficiency": 0.6, "compute_efficiency": 0.3, "measured_on": "2026-11-01",
        "deployment": "",
    }  # fmt: skip
    entry.update(changes)
    return entry


@pytest.mark.parametrize(
    "content",
    [
        "",
        "[]",
        '{"version": 2, "calibrations": []}',
        '{"version": 1, "calibrations": {}}',
        "x" * (2 * 1024 * 1024),
        json.dumps({"version": 1, "calibrations": [_entry(memory_efficiency=2.0)]}),
        json.dumps({"version": 1, "calibrations": [_entry(memory_efficiency=True)]}),
        json.dumps({"version": 1, "calibrations": [_entry(compute_efficiency=0)]}),
        json.dumps({"version": 1, "calibrations": [_entry(measured_on="20261101")]}),
        json.dumps({"version": 1, "calibrations": [_entry(measured_on="2026-02-30")]}),
        json.dumps({"version": 1, "calibrations": [_entry(model="m\x1b[2J")]}),
        json.dumps({"version": 1, "calibrations": [_entry(extra=1)]}),
        json.dumps({"version": 1, "calibrations": [_entry(model_version=True)]}),
        json.dumps({"version": 1, "calibrations": [_entry(model_version=0)]}),
        json.dumps({"version": 1, "calibrations": [_entry(model_version=10**9)]}),
        json.dumps({"version": 1, "calibrations": [_entry(model_version="2")]}),
        json.dumps({"version": 1, "calibrations": ["nope"]}),
        '{"version": 1, "calibrations": [{"memory_efficiency": NaN}]}',
    ],
)
def test_a_hostile_calibration_file_gives_a_warning_and_no_calibration(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "c.json"
    path.write_text(content)
    store = FileCalibrationStore(path)
    assert store.lookup(KEY) is None
    assert store.warnings and all("calibration ignored" in w for w in store.warnings)
    assert all("\x1b" not in w for w in store.warnings)


def test_a_link_or_folder_in_place_of_the_file_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "real.json").write_text(json.dumps({"version": 1, "calibrations": [_entry()]}))
    (tmp_path / "c.json").symlink_to(tmp_path / "real.json")
    store = FileCalibrationStore(tmp_path / "c.json")
    assert store.lookup(KEY) is None and store.warnings
    (tmp_path / "d.json").mkdir()
    assert FileCalibrationStore(tmp_path / "d.json").lookup(KEY) is None


def test_the_wiring_store_lives_under_the_state_dir(tmp_path: Path) -> None:
    assert wiring.calibrations().path == tmp_path / "state" / "calibrations.json"


def test_the_clock_seam_decides_what_is_old(monkeypatch: pytest.MonkeyPatch) -> None:
    class Then:
        def utc_now(self) -> datetime:
            return datetime(2025, 7, 1, tzinfo=UTC)

    monkeypatch.setattr(wiring, "clock", Then)
    _, got = _cli(*ARGS, "--api", "openai-gpt-4o")
    assert [a["old"] for a in got["api_comparison"]] == [False]
    monkeypatch.undo()
    _, now = _cli(*ARGS, "--api", "openai-gpt-4o")
    assert now["api_comparison"][0]["old"] is (date.today() > date(2025, 12, 28))


def test_prefill_does_not_pay_the_output_layer_per_prompt_token() -> None:
    # llama-server samples only the prompt's last position: a bigger output layer (a larger
    # vocabulary) slows each decode step, not each prompt token.
    result = _plan("qwen2.5-7b-instruct", "cpu-x86-16c-64gb")
    opt = result.chosen
    w = opt.facts.weights
    bigger_w = w.model_copy(update={"output_bytes": 10 * w.output_bytes})
    bigger = replace(opt, facts=opt.facts.model_copy(update={"weights": bigger_w}))
    base, big = (_load(o, result.profile, 1, p=1000, o=100) for o in (opt, bigger))
    assert big.prefill_tokens_per_s == pytest.approx(base.prefill_tokens_per_s)
    assert big.per_stream_tokens_per_s < base.per_stream_tokens_per_s
    assert big.ttft_s > base.ttft_s  # the first token's step reads the output layer once


def test_prefills_queue_behind_each_other_and_cpu_time_adds() -> None:
    # Machine time: a request's life holds every stream's prefill once and its output's steps.
    result = _plan("qwen2.5-7b-instruct", "cpu-x86-16c-64gb")
    one, four = (_load(result.chosen, result.profile, b, p=500, o=100) for b in (1, 4))
    for x in (one, four):
        prompt_s = 500 / x.prefill_tokens_per_s
        step = 1 / x.per_stream_tokens_per_s
        assert x.e2e_s == pytest.approx(x.slots * prompt_s + 100 * step)
        assert x.ttft_s == pytest.approx(prompt_s + step)
        assert x.ttft_burst_s == pytest.approx(x.slots * prompt_s + step)
        # CPU cores both fetch and compute: a step is the sum of the two
        assert step == pytest.approx(x.step_memory_s + x.step_compute_s)
    assert one.ttft_burst_s == pytest.approx(one.ttft_s)
    # A GPU overlaps them: a step is the longer of the two, plus its fixed per-layer time,
    # which grows with each extra stream.
    gpu = _plan("llama-3.1-8b-instruct", "nvidia-l4-24gb")
    g = _load(gpu.chosen, gpu.profile, 8)
    layers = gpu.chosen.facts.arch.n_layer
    latency = layers * LAYER_LATENCY_S["gpu"] * (1 + EXTRA_STREAM_LATENCY * 7)
    assert g.step_latency_s == pytest.approx(latency)
    assert 1 / g.per_stream_tokens_per_s == pytest.approx(
        max(g.step_memory_s, g.step_compute_s) + latency
    )
    assert one.step_latency_s == four.step_latency_s == 0.0  # none assumed on CPU cores


def test_gpu_decode_of_a_small_model_is_bound_by_per_layer_time_not_bytes() -> None:
    # Measured on an H200 (docs/bench.md "On a GPU"): a 1B model decodes at about the same
    # speed from F16 and Q4_K_M weights, far below what bandwidth alone would allow.
    small = _plan("llama-3.2-1b-instruct", "nvidia-h200-141gb", quant="Q4_K_M")
    big = _plan("llama-3.2-1b-instruct", "nvidia-h200-141gb", quant="F16")
    s, b = (_load(r.chosen, r.profile, 1, p=1, o=128) for r in (small, big))
    floor = small.chosen.facts.arch.n_layer * LAYER_LATENCY_S["gpu"]
    assert 1 / s.per_stream_tokens_per_s > floor
    assert s.per_stream_tokens_per_s < 1 / floor
    assert s.per_stream_tokens_per_s / b.per_stream_tokens_per_s < 2  # not the 3.2x of bytes
