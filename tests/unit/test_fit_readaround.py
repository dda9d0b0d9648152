"""A mapped model's room under a limit: the cold pages the kernel reads around the hot ones.

A fault in a mapping reads a window centred on the page (the disk's read_ahead_kb), so each edge
of a hot run of tensors pulls up to half a window of the cold run beside it (repacked sources,
an untied token_embd). Measured on the 8B shape at ctx 8192 (benchmarks/cap_edge.py,
docs/fit.md): full speed at 5500 MiB with 128 KiB read-ahead, thrashing in one start of three
at 5918 MiB with 8 MiB.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployer.core.fit.memory import (
    DEFAULT_READ_AHEAD_BYTES,
    FitSettings,
    MachineSpec,
    compute_bytes,
    estimate_memory,
)
from deployer.core.fit.plan import machine_spec
from deployer.core.hardware.detect import parse_read_ahead
from deployer.core.hardware.profiles import MAX_READ_AHEAD_KB, MIN_READ_AHEAD_KB, get_profile
from deployer.core.model.facts import READAROUND_WINDOWS, ModelArch, ModelFacts
from deployer.core.model.gguf_meta import TensorInfo, layout_from_tensors
from deployer.core.units import GIB, MIB

KIB = 1 << 10

Q4K, Q6K, F32 = "Q4_K", "Q6_K", "F32"


def _t(name: str, qtype: str, n_bytes: int, rows: int = 4096) -> TensorInfo:
    return TensorInfo(name, qtype, (4096, rows), n_bytes)


def _two_blocks(tied: bool = False) -> list[TensorInfo]:
    """token_embd | per block: norm (hot), q (repacked), v Q6_K (hot), ffn Q4_K (repacked)."""
    out = [_t("token_embd.weight", Q4K, 100 * MIB)]
    for i in range(2):
        out += [
            _t(f"blk.{i}.attn_norm.weight", F32, 16 * KIB),
            _t(f"blk.{i}.attn_q.weight", Q4K, 10 * MIB),
            _t(f"blk.{i}.attn_v.weight", Q6K, 3 * MIB),
            _t(f"blk.{i}.ffn_up.weight", Q4K, 40 * MIB),
        ]
    if not tied:
        out.append(_t("output.weight", Q6K, 50 * MIB))
    return out


def test_cold_runs_beside_hot_ones_give_half_a_window_a_side() -> None:
    layout = layout_from_tensors(_two_blocks(), 2, 400 * MIB)
    w = READAROUND_WINDOWS[0]  # 128 KiB
    # cold runs: token_embd (hot after it), q0 (hot both sides), up0 (both), q1, up1 (both)
    assert layout.readaround_bytes(w) == w // 2 + 4 * w
    # a window larger than a cold run takes the run, no more
    big = 16 * MIB
    assert layout.readaround_bytes(big) == 8 * MIB + 10 * MIB + 16 * MIB + 10 * MIB + 16 * MIB


def test_a_tied_token_embd_is_hot_and_pulls_nothing() -> None:
    untied = layout_from_tensors(_two_blocks(), 2, 400 * MIB)
    tied = layout_from_tensors(_two_blocks(tied=True), 2, 400 * MIB)
    w = READAROUND_WINDOWS[0]
    assert untied.readaround_bytes(w) - tied.readaround_bytes(w) == w // 2


def test_a_window_between_recorded_ones_takes_the_next_larger_and_beyond_all_cold() -> None:
    layout = layout_from_tensors(_two_blocks(), 2, 400 * MIB)
    assert layout.readaround_bytes(200 * KIB) == layout.readaround_bytes(256 * KIB)
    cold = 100 * MIB + 2 * (10 + 40) * MIB
    assert layout.readaround_bytes(64 * MIB) == cold


def _facts(tensors: list[TensorInfo]) -> ModelFacts:
    arch = ModelArch.model_validate(
        dict(architecture="llama", n_layer=2, n_embd=4096, n_head=32, n_head_kv=[8, 8],
             head_dim_k=128, head_dim_v=128, n_ff=14336, n_vocab=128256, ctx_train=8192)
    )  # fmt: skip
    return ModelFacts(name="t", quant="Q4_K_M", arch=arch, source="test",
                      weights=layout_from_tensors(tensors, 2, 400 * MIB))  # fmt: skip


def _cpu(read_ahead: int) -> MachineSpec:
    return MachineSpec(kind="cpu", device_count=0, device_budget_bytes=0,
                       device_overhead_bytes=0, host_budget_bytes=64 * GIB, cpu_threads=2,
                       read_ahead_bytes=read_ahead)  # fmt: skip


def test_the_plan_leaves_room_for_the_disks_read_around_when_mapped_only() -> None:
    facts = _facts(_two_blocks())
    small = estimate_memory(facts, FitSettings(ctx=4096), _cpu(DEFAULT_READ_AHEAD_BYTES)).host
    large = estimate_memory(facts, FitSettings(ctx=4096), _cpu(8 * MIB)).host
    grew = facts.weights.readaround_bytes(8 * MIB) - facts.weights.readaround_bytes(128 * KIB)
    assert large.total_bytes - small.total_bytes == pytest.approx(grew, abs=MIB // 8)
    loaded = FitSettings(ctx=4096, load_mode="none")
    assert (
        estimate_memory(facts, loaded, _cpu(8 * MIB)).host.total_bytes
        == estimate_memory(facts, loaded, _cpu(DEFAULT_READ_AHEAD_BYTES)).host.total_bytes
    )


def test_profiles_default_to_linuxs_read_ahead_and_carry_a_detected_one() -> None:
    profile = get_profile("cpu-x86-2c-8gb")
    assert profile.disk_read_ahead_kb == 128
    assert machine_spec(profile).read_ahead_bytes == DEFAULT_READ_AHEAD_BYTES
    vm = profile.model_copy(update={"disk_read_ahead_kb": 8192})
    assert machine_spec(vm).read_ahead_bytes == 8 * MIB


@given(st.lists(st.text(max_size=12), max_size=6))
def test_read_ahead_values_from_sysfs_are_bounded_whatever_they_say(values: list[str]) -> None:
    got = parse_read_ahead(tuple(values))
    assert got is None or MIN_READ_AHEAD_KB <= got <= MAX_READ_AHEAD_KB


def test_the_largest_disk_read_ahead_wins() -> None:
    assert parse_read_ahead(("128\n", "8192\n", "0\n", "x", "99999999999")) == 8192
    assert parse_read_ahead(()) is None


def test_moe_compute_is_never_under_what_llama_server_logged() -> None:
    """Qwen3-30B-A3B and OLMoE shapes, ctx 4096, 1 slot, flash attention, ub 512: the host
    compute buffers llama-server 11434 logged (benchmarks/results/shapes_check.json)."""
    qwen3moe = ModelArch.model_validate(
        dict(architecture="qwen3moe", n_layer=48, n_embd=2048, n_head=32, n_head_kv=[4] * 48,
             head_dim_k=128, head_dim_v=128, n_ff=768, n_vocab=151936, ctx_train=40960,
             n_expert=128, n_expert_used=8)
    )  # fmt: skip
    olmoe = ModelArch.model_validate(
        dict(architecture="olmoe", n_layer=16, n_embd=2048, n_head=16, n_head_kv=[16] * 16,
             head_dim_k=128, head_dim_v=128, n_ff=1024, n_vocab=50304, ctx_train=4096,
             n_expert=64, n_expert_used=8)
    )  # fmt: skip
    s = FitSettings(ctx=4096, n_ubatch=512, flash_attention=True)
    for arch, logged_mib in ((qwen3moe, 92.02), (olmoe, 72.02)):
        est = compute_bytes(arch, s) / MIB
        assert logged_mib <= est <= logged_mib + 40, arch.architecture


def test_with_a_gpu_the_host_budgets_three_windows_a_host_block_plus_three() -> None:
    """docs/fit.md: off the CPU the tensor order is not used; a bound of three windows per block
    left on the host, plus three."""
    facts = _facts(_two_blocks())  # untied token_embd
    window = 8 * MIB
    gpu = MachineSpec(kind="gpu", device_count=1, device_budget_bytes=80 * GIB,
                      device_overhead_bytes=0, host_budget_bytes=64 * GIB, cpu_threads=2,
                      read_ahead_bytes=window)  # fmt: skip

    def overhead(ngl: int, mode: str = "mmap") -> int:
        s = FitSettings(ctx=4096, n_gpu_layers=ngl, load_mode=mode)
        return estimate_memory(facts, s, gpu).host.overhead_bytes

    # one block on the host (ngl 2: the output layer and one block offloaded)
    one_block = overhead(2) - overhead(2, "none")
    full = overhead(3) - overhead(3, "none")
    assert one_block == pytest.approx(3 * 2 * window, abs=MIB)  # page tables differ a little
    # token_embd, all the host maps then, is read a row a token and not held: nothing hot is
    # mapped, so no read-around either (page tables differ a little)
    assert full == pytest.approx(0, abs=MIB)
    # on Apple the table stays counted (docs/fit.md): three windows
    apple = replace(gpu, kind="apple")
    s = FitSettings(ctx=4096, n_gpu_layers=3)
    full_apple = (
        estimate_memory(facts, s, apple).host.overhead_bytes
        - estimate_memory(facts, replace(s, load_mode="none"), apple).host.overhead_bytes
    )
    assert full_apple == pytest.approx(3 * 1 * window, abs=MIB)


@pytest.mark.parametrize(
    ("used", "expert_ff", "n_head", "logged_mib"),
    [(8, 768, 32, 104.01), (2, 768, 32, 104.01), (4, 768, 32, 104.01), (8, 384, 32, 104.01),
     (8, 768, 64, 184.01)],
)  # fmt: skip
def test_moe_compute_without_flash_attention_is_not_under_the_probe(
    used: int, expert_ff: int, n_head: int, logged_mib: float
) -> None:
    """Two-layer qwen3moe variants, ctx 4096, 4 slots, no flash attention, ub 512: the compute
    buffers llama-server 11434 logged (benchmarks/compute_probe.py --fa off --parallel 4,
    benchmarks/results/compute_probe.json). With few or narrow experts the attention half's
    2 x ff term fell 13-19 MiB short of them."""
    arch = ModelArch.model_validate(
        dict(architecture="qwen3moe", n_layer=2, n_embd=2048, n_head=n_head, n_head_kv=[4] * 2,
             head_dim_k=128, head_dim_v=128, n_ff=expert_ff, n_vocab=32000, ctx_train=40960,
             n_expert=128, n_expert_used=used)
    )  # fmt: skip
    s = FitSettings(ctx=4096, parallel=4, n_ubatch=512, flash_attention=False)
    est = compute_bytes(arch, s) / MIB
    assert logged_mib <= est <= logged_mib + 10
