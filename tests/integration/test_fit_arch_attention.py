"""The plan's memory against a real llama-server on small real-shaped files of the windowed and
special-attention architectures: gpt-oss (alternating windows, attention sinks, biased experts),
Llama 4 (chunked attention on three layers of four, NoPE layers, a shared expert), Cohere 2 and
EXAONE 4 (a window on three layers of four; EXAONE 4 only on its 64-layer model), Gemma 3n
(per-layer input embeddings, altup and laurel, layers past the 20th reusing earlier caches),
SmallThinker (a fixed 4096-token window, dense first), Gemma 3 with a window pattern of its
own, and Mistral 3 / Phi-3 files that state a window their loaders ignore.

Weights are zeros; the buffers llama-server logs are the truth: the KV cache and the weights to
the logged precision, the compute buffer never above the plan."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter

from deployer.adapters.gguf_files import facts_from_gguf
from deployer.core.fit.llamalog import parse_buffers
from deployer.core.fit.memory import (
    FitSettings,
    MachineSpec,
    compute_bytes,
    estimate_memory,
    kv_bytes,
    recurrent_bytes,
)
from deployer.core.units import MIB
from tests.integration.test_fit_architectures import FF, E, V, _embeddings, _finish, _start, _tensor

pytestmark = [pytest.mark.llama_server, pytest.mark.usefixtures("llama_server_prefix")]

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

_CPU = MachineSpec(kind="cpu", device_count=0, device_budget_bytes=0, device_overhead_bytes=0,
                   host_budget_bytes=2**34, cpu_threads=2)  # fmt: skip


def _attn(w: GGUFWriter, p: str, q: int, kv: int) -> None:
    """Separate Q, K, V (K and V `kv` wide) and the output projection back to E."""
    _tensor(w, p + "attn_q.weight", E, q)
    _tensor(w, p + "attn_k.weight", E, kv)
    _tensor(w, p + "attn_v.weight", E, kv)
    _tensor(w, p + "attn_output.weight", q, E)


def _swiglu(w: GGUFWriter, p: str, ff: int = FF) -> None:
    _tensor(w, p + "ffn_gate.weight", E, ff)
    _tensor(w, p + "ffn_down.weight", ff, E)
    _tensor(w, p + "ffn_up.weight", E, ff)


def _experts(w: GGUFWriter, p: str, n_exp: int, ff: int, *, bias: bool = False) -> None:
    _tensor(w, p + "ffn_gate_inp.weight", E, n_exp)
    _tensor(w, p + "ffn_gate_exps.weight", E, ff, n_exp)
    _tensor(w, p + "ffn_down_exps.weight", ff, E, n_exp)
    _tensor(w, p + "ffn_up_exps.weight", E, ff, n_exp)
    if bias:
        _tensor(w, p + "ffn_gate_inp.bias", n_exp)
        _tensor(w, p + "ffn_gate_exps.bias", ff, n_exp)
        _tensor(w, p + "ffn_down_exps.bias", E, n_exp)
        _tensor(w, p + "ffn_up_exps.bias", ff, n_exp)


def gpt_oss(path: Path, n_layer: int = 4) -> Path:
    """gpt-oss (src/models/openai-moe.cpp): a 128-token window on every other layer, 64-wide
    heads that are not n_embd / n_head (the real 2880 / 64 = 45), a sink per head, biased
    experts and attention output."""
    n_head, n_kv, head, n_exp, n_used, ff = 8, 2, 64, 4, 2, 128
    w = _start(path, "gpt-oss", {
        "block_count": n_layer, "embedding_length": E, "context_length": 131072,
        "attention.head_count": n_head, "attention.head_count_kv": n_kv,
        "attention.key_length": head, "attention.value_length": head,
        "rope.dimension_count": head, "attention.sliding_window": 128,
        "expert_count": n_exp, "expert_used_count": n_used, "expert_feed_forward_length": ff,
    })  # fmt: skip
    _embeddings(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _tensor(w, p + "attn_norm.weight", E)
        _tensor(w, p + "post_attention_norm.weight", E)
        _attn(w, p, n_head * head, n_kv * head)
        _tensor(w, p + "attn_output.bias", E)
        _tensor(w, p + "attn_sinks.weight", n_head)
        _experts(w, p, n_exp, ff, bias=True)
    _finish(w)
    return path


def llama4(
    path: Path,
    n_layer: int = 4,
    *,
    moe_step: int = 2,
    dense_ff: int = FF,
    ff_exp: int = 128,
    n_used: int = 1,
) -> Path:
    """Llama 4 (src/models/llama4.cpp): chunked attention (8192 tokens, whatever the file says)
    on three layers of four, the fourth without RoPE; every `moe_step`-th layer MoE with a
    shared expert as wide as a routed one (interleave_moe_layer_step: Maverick 2, Scout 1),
    the others dense, `dense_ff` wide (Maverick: 16384 beside 8192-wide experts)."""
    n_head, n_kv, head, n_exp = 4, 2, 64, 4
    w = _start(path, "llama4", {
        "block_count": n_layer, "embedding_length": E, "context_length": 262144,
        "feed_forward_length": dense_ff, "attention.head_count": n_head,
        "attention.head_count_kv": n_kv, "rope.dimension_count": head,
        "expert_count": n_exp, "expert_used_count": n_used,
        "expert_feed_forward_length": ff_exp, "interleave_moe_layer_step": moe_step,
        "vocab_size": V,
    })  # fmt: skip
    _embeddings(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _tensor(w, p + "attn_norm.weight", E)
        _attn(w, p, n_head * head, n_kv * head)
        _tensor(w, p + "ffn_norm.weight", E)
        if moe_step and (il + 1) % moe_step == 0:
            _experts(w, p, n_exp, ff_exp)
            _tensor(w, p + "ffn_gate_shexp.weight", E, ff_exp)
            _tensor(w, p + "ffn_down_shexp.weight", ff_exp, E)
            _tensor(w, p + "ffn_up_shexp.weight", E, ff_exp)
        else:
            _swiglu(w, p, dense_ff)
    _finish(w)
    return path


def llama4_wide_dense(path: Path) -> Path:
    """Maverick's kind: dense layers wider than an expert (here 1024 beside 128)."""
    return llama4(path, dense_ff=1024)


def llama4_shared_expert(path: Path) -> Path:
    """Scout's layout: every layer MoE (two routed experts and the shared one, 512 wide)."""
    return llama4(path, moe_step=1, ff_exp=512, n_used=2)


def cohere2(path: Path, n_layer: int = 4) -> Path:
    """Command R7B (src/models/cohere2.cpp): a window on three layers of four, tied output,
    LayerNorm without bias."""
    n_head, n_kv = 4, 2
    w = _start(path, "cohere2", {
        "block_count": n_layer, "embedding_length": E, "context_length": 131072,
        "feed_forward_length": FF, "attention.head_count": n_head,
        "attention.head_count_kv": n_kv, "attention.sliding_window": 512,
    })  # fmt: skip
    w.add_float32("cohere2.logit_scale", 0.25)
    w.add_float32("cohere2.attention.layer_norm_epsilon", 1e-5)
    _tensor(w, "token_embd.weight", E, V)
    _tensor(w, "output_norm.weight", E)
    for il in range(n_layer):
        p = f"blk.{il}."
        _tensor(w, p + "attn_norm.weight", E)
        _attn(w, p, E, n_kv * E // n_head)
        _swiglu(w, p)
    _finish(w)
    return path


def _f16(w: GGUFWriter, name: str, *shape: int) -> None:
    w.add_tensor(name, np.zeros(tuple(reversed(shape)), dtype=np.float16))


def _exaone4(path: Path, n_layer: int, window: int) -> Path:
    """EXAONE 4 (src/models/exaone4.cpp): post-norms, Q/K norms; a window (3 of 4 layers) only
    on the 64-layer model, whatever the smaller one's file states. Matrices in f16 (64 layers)."""
    n_head, n_kv, head, ff = 4, 1, 64, 64
    w = _start(path, "exaone4", {
        "block_count": n_layer, "embedding_length": E, "context_length": 65536,
        "feed_forward_length": ff, "attention.head_count": n_head,
        "attention.head_count_kv": n_kv, "attention.sliding_window": window,
    })  # fmt: skip
    _embeddings(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        for name, shape in (
            ("attn_q.weight", (E, n_head * head)), ("attn_k.weight", (E, n_kv * head)),
            ("attn_v.weight", (E, n_kv * head)), ("attn_output.weight", (n_head * head, E)),
            ("ffn_gate.weight", (E, ff)), ("ffn_down.weight", (ff, E)), ("ffn_up.weight", (E, ff)),
        ):  # fmt: skip
            _f16(w, p + name, *shape)
        _tensor(w, p + "post_attention_norm.weight", E)
        _tensor(w, p + "attn_q_norm.weight", head)
        _tensor(w, p + "attn_k_norm.weight", head)
        _tensor(w, p + "post_ffw_norm.weight", E)
    _finish(w)
    return path


def exaone4_small(path: Path) -> Path:
    return _exaone4(path, 4, 512)


def exaone4_64(path: Path) -> Path:
    return _exaone4(path, 64, 512)


def gemma3n(path: Path, n_layer: int = 22, ff: int = 64) -> Path:
    """Gemma 3n (src/models/gemma3n.cpp): a window on four layers of five, layers from the 20th
    on reusing layer 18's (windowed) or 19's (full) cache, a 256-wide per-layer input per layer
    looked up from per_layer_token_embd, altup (4 streams) and laurel (rank 64) blocks."""
    n_head, n_kv, head = 4, 2, 64
    altup, laurel, per_layer = 4, 64, 256  # llama.cpp's fixed n_altup, laurel_rank, n_embd_altup
    w = _start(path, "gemma3n", {
        "block_count": n_layer, "embedding_length": E, "context_length": 32768,
        "feed_forward_length": ff, "attention.head_count": n_head,
        "attention.head_count_kv": n_kv, "attention.key_length": head,
        "attention.value_length": head, "rope.dimension_count": head,
        "attention.sliding_window": 512,
    })  # fmt: skip
    _tensor(w, "token_embd.weight", E, V)
    _tensor(w, "output_norm.weight", E)
    _tensor(w, "altup_proj.weight", E, E, altup - 1)
    _tensor(w, "altup_unembd_proj.weight", E, E, altup - 1)
    _tensor(w, "per_layer_token_embd.weight", per_layer * n_layer, V)
    _tensor(w, "per_layer_model_proj.weight", E, per_layer * n_layer)
    _tensor(w, "per_layer_proj_norm.weight", per_layer)
    for il in range(n_layer):
        p = f"blk.{il}."
        _tensor(w, p + "attn_norm.weight", E)
        _attn(w, p, n_head * head, n_kv * head)
        _tensor(w, p + "attn_q_norm.weight", head)
        _tensor(w, p + "attn_k_norm.weight", head)
        _tensor(w, p + "post_attention_norm.weight", E)
        _tensor(w, p + "ffn_norm.weight", E)
        _swiglu(w, p, ff)
        _tensor(w, p + "post_ffw_norm.weight", E)
        _tensor(w, p + "inp_gate.weight", E, per_layer)
        _tensor(w, p + "proj.weight", per_layer, E)
        _tensor(w, p + "post_norm.weight", E)
        _tensor(w, p + "altup_correct_coef.weight", altup, altup)
        _tensor(w, p + "altup_correct_scale.weight", E)
        _tensor(w, p + "altup_predict_coef.weight", altup, altup * altup)
        _tensor(w, p + "altup_router.weight", E, altup)
        _tensor(w, p + "altup_router_norm.weight", E)
        _tensor(w, p + "laurel_l.weight", E, laurel)
        _tensor(w, p + "laurel_r.weight", laurel, E)
        _tensor(w, p + "laurel_post_norm.weight", E)
    _finish(w)
    return path


def gemma3n_wide_ffn(path: Path) -> Path:
    """Gemma 3n with a feed-forward wide enough that a layer, not the per-layer inputs'
    projection, is the compute buffer's peak (six layers: no cache reuse)."""
    return gemma3n(path, n_layer=6, ff=1024)


def smallthinker(path: Path, n_layer: int = 4) -> Path:
    """SmallThinker (src/models/smallthinker.cpp): any stated window becomes 4096 tokens, on
    every layer but each fourth from the first (dense first); MoE on every layer."""
    n_head, n_kv, head, n_exp, n_used, ff_exp = 4, 2, 64, 4, 2, 128
    w = _start(path, "smallthinker", {
        "block_count": n_layer, "embedding_length": E, "context_length": 32768,
        "feed_forward_length": FF, "attention.head_count": n_head,
        "attention.head_count_kv": n_kv, "rope.dimension_count": head,
        "attention.sliding_window": 512, "expert_count": n_exp,
        "expert_used_count": n_used, "expert_feed_forward_length": ff_exp,
        "expert_gating_func": 1,  # softmax (llama.cpp aborts on the default 0)
    })  # fmt: skip
    _embeddings(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _tensor(w, p + "attn_norm.weight", E)
        _attn(w, p, n_head * head, n_kv * head)
        _tensor(w, p + "ffn_norm.weight", E)
        _experts(w, p, n_exp, ff_exp)
    _finish(w)
    return path


def gemma3_pattern3(path: Path, n_layer: int = 6) -> Path:
    """Gemma 3 (src/models/gemma3.cpp) whose file sets sliding_window_pattern 3 (two windowed
    layers, then a full one) instead of the default 6, tied output."""
    n_head, n_kv, head = 4, 2, 64
    w = _start(path, "gemma3", {
        "block_count": n_layer, "embedding_length": E, "context_length": 32768,
        "feed_forward_length": FF, "attention.head_count": n_head,
        "attention.head_count_kv": n_kv, "attention.key_length": head,
        "attention.value_length": head, "attention.sliding_window": 512,
        "attention.sliding_window_pattern": 3,
    })  # fmt: skip
    _tensor(w, "token_embd.weight", E, V)
    _tensor(w, "output_norm.weight", E)
    for il in range(n_layer):
        p = f"blk.{il}."
        _tensor(w, p + "attn_norm.weight", E)
        _attn(w, p, n_head * head, n_kv * head)
        _tensor(w, p + "post_attention_norm.weight", E)
        _tensor(w, p + "attn_k_norm.weight", head)
        _tensor(w, p + "attn_q_norm.weight", head)
        _tensor(w, p + "ffn_norm.weight", E)
        _swiglu(w, p)
        _tensor(w, p + "post_ffw_norm.weight", E)
    _finish(w)
    return path


def mistral3_with_window(path: Path, n_layer: int = 4) -> Path:
    """A Mistral 3 file stating a 512-token window: its loader reads none (the full cache)."""
    n_head, n_kv, head = 4, 2, 64
    w = _start(path, "mistral3", {
        "block_count": n_layer, "embedding_length": E, "context_length": 32768,
        "feed_forward_length": FF, "attention.head_count": n_head,
        "attention.head_count_kv": n_kv, "rope.dimension_count": head,
        "attention.sliding_window": 512,
    })  # fmt: skip
    _embeddings(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _tensor(w, p + "attn_norm.weight", E)
        _attn(w, p, n_head * head, n_kv * head)
        _tensor(w, p + "ffn_norm.weight", E)
        _swiglu(w, p)
    _finish(w)
    return path


def phi3_with_window(path: Path, n_layer: int = 4) -> Path:
    """A Phi-3 file stating a 512-token window: its loader turns it off (the full cache).
    Fused QKV, a fused gate|up projection."""
    n_head, n_kv = 4, 2
    kv = n_kv * E // n_head
    w = _start(path, "phi3", {
        "block_count": n_layer, "embedding_length": E, "context_length": 32768,
        "feed_forward_length": FF, "attention.head_count": n_head,
        "attention.head_count_kv": n_kv, "rope.dimension_count": E // n_head,
        "attention.sliding_window": 512,
    })  # fmt: skip
    _embeddings(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _tensor(w, p + "attn_norm.weight", E)
        _tensor(w, p + "attn_qkv.weight", E, E + 2 * kv)
        _tensor(w, p + "attn_output.weight", E, E)
        _tensor(w, p + "ffn_norm.weight", E)
        _tensor(w, p + "ffn_down.weight", FF, E)
        _tensor(w, p + "ffn_up.weight", E, 2 * FF)
    _finish(w)
    return path


@dataclass(frozen=True)
class Measured:
    """One llama-server start and the plan for the same file and settings, (logged, plan) bytes."""

    kv: tuple[int, int]
    rs: tuple[int, int]
    weights: tuple[int, int]
    compute: tuple[int, int]

    def line(self) -> str:
        def mib(pair: tuple[int, int]) -> str:
            return f"{pair[0] / MIB:.2f}/{pair[1] / MIB:.2f}"

        return (f"KV {mib(self.kv)} RS {mib(self.rs)} weights {mib(self.weights)} "
                f"compute {mib(self.compute)} (logged/plan MiB)")  # fmt: skip

    def mismatches(self) -> list[str]:
        """What the plan gets wrong: KV and state to the log's 0.01 MiB, the weights within
        0.02 MiB, the compute buffer never under."""
        wrong = []
        if abs(self.kv[0] - self.kv[1]) > 0.01 * MIB:
            wrong.append("KV")
        if abs(self.rs[0] - self.rs[1]) > 0.01 * MIB:
            wrong.append("RS")
        if abs(self.weights[0] - self.weights[1]) > 0.02 * MIB:
            wrong.append("weights")
        if self.compute[0] > self.compute[1]:
            wrong.append("compute under")
        return wrong


def measure(path: Path, ctx: int, slots: int, fa: bool) -> Measured:
    """llama-server's logged host buffers for `path` at -c ctx -np slots, and the plan's."""
    from _llama import run_server

    run = run_server(path, ["-c", str(ctx), "-np", str(slots), "-fa", "on" if fa else "off",
                            "--fit", "off", "-t", "2"])  # fmt: skip
    logged = parse_buffers(run.log.split("loaded meta data")[-1])
    facts = facts_from_gguf(path)
    arch = facts.arch
    s = FitSettings(ctx=ctx, parallel=slots, flash_attention=fa)
    host = estimate_memory(facts, s, _CPU).host
    layers = range(arch.n_layer)
    return Measured(
        kv=(logged.get("host", "KV"), kv_bytes(arch, layers, s)),
        rs=(logged.get("host", "RS"), recurrent_bytes(arch, layers, s)),
        weights=(logged.get("host", "model"), host.logged_weights_bytes),
        compute=(logged.get("host", "compute"), compute_bytes(arch, s)),
    )


_T, _F = True, False
# (builder, sliding window, windowed layers, layers owning a cache (0: all)) as llama.cpp's
# loader sets them (its print_info: n_swa, and load_tensors: "is_swa" per layer)
LAYOUTS = [
    (gpt_oss, 128, [_T, _F] * 2, 0),
    (llama4, 8192, [_T, _T, _T, _F], 0),
    (llama4_wide_dense, 8192, [_T, _T, _T, _F], 0),
    (llama4_shared_expert, 8192, [_T, _T, _T, _F], 0),
    (cohere2, 512, [_T, _T, _T, _F], 0),
    (exaone4_small, 0, [], 0),
    (exaone4_64, 512, [_T, _T, _T, _F] * 16, 0),
    (gemma3n, 512, ([_T] * 4 + [_F]) * 4 + [_T, _T], 20),
    (gemma3n_wide_ffn, 512, [_T] * 4 + [_F, _T], 0),
    (smallthinker, 4096, [_F, _T, _T, _T], 0),
    (gemma3_pattern3, 512, [_T, _T, _F] * 2, 0),
    (mistral3_with_window, 0, [], 0),
    (phi3_with_window, 0, [], 0),
]
BUILDS = [layout[0] for layout in LAYOUTS]


@pytest.mark.parametrize(("build", "window", "swa", "kv_layers"), LAYOUTS,
                         ids=[layout[0].__name__ for layout in LAYOUTS])  # fmt: skip
def test_the_plan_reads_the_layout_llama_cpp_loads(
    tmp_path: Path, build: object, window: int, swa: list[bool], kv_layers: int
) -> None:
    arch = facts_from_gguf(build(tmp_path / "m.gguf")).arch  # type: ignore[operator]
    assert (arch.sliding_window, arch.swa_layers, arch.kv_layers) == (window, swa, kv_layers)
    if build in (gemma3n, gemma3n_wide_ffn):  # the per-layer inputs: 256 a layer
        assert arch.n_embd_input_extra == 256 * arch.n_layer
    if build is gpt_oss:  # the file's 64-wide heads, not n_embd / n_head
        assert arch.head_dims(0) == (64, 64)


@pytest.mark.parametrize("build", BUILDS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(("ctx", "slots", "fa"), [(8192, 2, True), (4096, 1, False)])
def test_memory_is_what_llama_server_allocates(
    tmp_path: Path, build: object, ctx: int, slots: int, fa: bool
) -> None:
    m = measure(build(tmp_path / "m.gguf"), ctx, slots, fa)  # type: ignore[operator]
    assert not m.mismatches(), m.line()


@pytest.mark.parametrize(("build", "ctx"), [(llama4, 32768), (smallthinker, 16384)],
                         ids=["llama4-chunk", "smallthinker-window"])  # fmt: skip
def test_a_fixed_window_engages_past_it(tmp_path: Path, build: object, ctx: int) -> None:
    """Llama 4's 8192-token chunks and SmallThinker's 4096-token window, which the two
    settings above never exceed (a stream of 4096 cells): one slot over a longer context."""
    m = measure(build(tmp_path / "m.gguf"), ctx, 1, True)  # type: ignore[operator]
    assert m.kv[0] < 4 * ctx * 512  # 512 B a cell a layer: the windowed layers hold less
    assert not m.mismatches(), m.line()


def test_a_full_size_parallel_block_is_not_under(tmp_path: Path) -> None:
    """Command R7B at full size (benchmarks/shapes.py, weights a hole): with flash attention
    its feed-forward half is the larger, and the attention's output waits beside it for the
    block's final sum. The small files' attention half hides that row; here the plan was 8 MiB
    under llama-server's log before it counted it."""
    import shapes

    m = measure(shapes.build("command-r7b-q4_k_m", tmp_path), 4096, 1, True)
    assert not m.mismatches(), m.line()
    assert m.compute[1] - m.compute[0] < 4 * MIB, m.line()  # and not far over
