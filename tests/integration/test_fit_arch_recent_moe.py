"""The plan's KV cache, recurrent state, weights and compute buffer against a real llama-server,
on small real-shaped files of the recent MoE architectures of the pinned llama.cpp: Bailing MoE 3
(Kimi delta attention beside MLA), dots3-note (MLA whose windowed layers have their own latent
rank, a DSA indexer on the layers it marks), GLM-5-Next (KDA beside MLA with a k-pool indexer,
mHC residual streams), Qwen4-Exp (gated delta nets beside gated attention with a pooled QSA
indexer, low-rank hyper-connections, no per-layer norms), HY-V4 (MLA with sinks, iHC streams, an
indexer on the layers it marks), Kimi-K3 (KDA beside gated MLA, cross-layer attention residuals,
latent experts), MiniMax-M3 (GQA with MiniMax sparse attention: an indexer K and V past the dense
layers), Laguna (per-layer head counts, a window on three layers of four, a head-wise gate) and
the diffusion MoEs RND1 and LLaDA-MoE (no memory at all: served with --embedding).

Mended: MiniMax-M3's sparse attention expands its block selection to a per-cell mask for each
indexer head (110 MiB under at ctx 16384 x 1 slot before), Kimi-K3 banks a layer input every
attn_res.block_size layers to the graph's end (0.4 MiB under on four layers, 8.9 on sixteen),
and GLM-5-Next's and Qwen4-Exp's indexers score every stream's cells (17-29 MiB under at ctx
32768 x 16 slots).

Experts are 3-D `ffn_*_exps` tensors. Weights are zeros; the buffers llama-server logs are the
truth, and these tests assert it: where the plan is wrong they fail."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from gguf import GGUFWriter

from deployer.adapters.gguf_files import facts_from_gguf
from deployer.core.fit.memory import (
    FitSettings,
    compute_bytes,
)
from deployer.core.units import MIB
from tests.integration.test_fit_arch_moe import (
    FF_EXP,
    HEAD,
    N_EXP,
    N_HEAD,
    N_KV,
    N_USED,
    _dense_ffn,
    _experts,
    _finish,
    _keys,
    _output,
    _put,
    _qkv,
)
from tests.integration.test_fit_arch_more import (
    SETTINGS,
    _check_cache_and_weights,
    _mib,
    _norms,
    _serve,
    measure,
)
from tests.integration.test_fit_architectures import FF, E, V, _start, _tensor

pytestmark = [pytest.mark.llama_server, pytest.mark.usefixtures("llama_server_prefix")]

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

Builder = Callable[..., Path]

# MLA of the small files: a 64-wide Q and KV latent, 16 rope dims, 32 nope, 32-wide V heads
Q_LORA, KV_LORA, ROPE, NOPE, V_HEAD = 64, 64, 16, 32, 32
KDA, D_CONV = 64, 4  # Kimi delta attention: a 64-wide head, a 4-tap convolution
IDX_HEADS, IDX_HEAD = 4, 64  # the sparse-attention indexer: 4 heads of 64


def _mla_keys(n_layer: int, extra: dict[str, int], *, hybrid: bool = False) -> dict[str, int]:
    """An MLA file's keys: the latent and its rope part cached as one K head (a `hybrid` file
    states its KV heads per layer, 0 on the recurrent ones)."""
    keys = {
        "block_count": n_layer, "embedding_length": E, "context_length": 32768,
        "feed_forward_length": FF, "attention.head_count": N_HEAD, "attention.head_count_kv": 1,
        "attention.key_length": KV_LORA + ROPE, "attention.value_length": KV_LORA,
        "attention.key_length_mla": NOPE + ROPE, "attention.value_length_mla": V_HEAD,
        "attention.kv_lora_rank": KV_LORA, "rope.dimension_count": ROPE,
        "expert_feed_forward_length": FF_EXP, "expert_count": N_EXP,
        "expert_used_count": N_USED, "expert_shared_count": 1, "leading_dense_block_count": 1,
        "expert_gating_func": 2, "vocab_size": V,
    } | extra  # fmt: skip
    if hybrid:
        del keys["attention.head_count_kv"]
    return keys


def _mla(
    w: GGUFWriter, p: str, *, q_lora: bool = True, kv_lora: int = KV_LORA, rope: int = ROPE
) -> None:
    """MLA's attention: a low-rank (or full) Q, the compressed KV and per-head K/V absorbers."""
    if q_lora:
        _put(w, p, (("attn_q_a.weight", (E, Q_LORA)), ("attn_q_a_norm.weight", (Q_LORA,)),
                    ("attn_q_b.weight", (Q_LORA, N_HEAD * (NOPE + rope)))))  # fmt: skip
    else:
        _tensor(w, p + "attn_q.weight", E, N_HEAD * (NOPE + rope))
    _put(w, p, (("attn_kv_a_mqa.weight", (E, kv_lora + rope)),
                ("attn_kv_a_norm.weight", (kv_lora,)),
                ("attn_k_b.weight", (NOPE, kv_lora, N_HEAD)),
                ("attn_v_b.weight", (kv_lora, V_HEAD, N_HEAD)),
                ("attn_output.weight", (N_HEAD * V_HEAD, E))))  # fmt: skip


def _kda(w: GGUFWriter, p: str, *, low_rank_f: bool, gate: str) -> None:
    """Kimi delta attention: Q, K and V convolutions, the decay (f) and output gate (g)
    projections (`gate`: "g_ab" low rank, "g" full rank, "g_a" one full-rank g_a), beta, A."""
    d_inner = KDA * N_HEAD
    _put(w, p, (("ssm_conv1d_q.weight", (D_CONV, 1, d_inner)),
                ("ssm_conv1d_k.weight", (D_CONV, 1, d_inner)),
                ("ssm_conv1d_v.weight", (D_CONV, 1, d_inner)), ("attn_q.weight", (E, d_inner)),
                ("attn_k.weight", (E, d_inner)), ("attn_v.weight", (E, d_inner)),
                ("ssm_beta.weight", (E, N_HEAD)), ("ssm_dt.bias", (d_inner,)),
                ("ssm_norm.weight", (KDA,)), ("attn_output.weight", (d_inner, E))))  # fmt: skip
    if low_rank_f:
        _put(w, p, (("ssm_f_a.weight", (E, KDA)), ("ssm_f_b.weight", (KDA, d_inner))))
    else:
        _tensor(w, p + "ssm_f_a.weight", E, d_inner)
    if gate == "g_ab":
        _put(w, p, (("ssm_g_a.weight", (E, KDA)), ("ssm_g_b.weight", (KDA, d_inner))))
    else:
        _tensor(w, p + f"ssm_{gate}.weight", E, d_inner)


def _dsa_indexer(w: GGUFWriter, p: str) -> None:
    """DeepSeek 3.2's lightning indexer (its keys cached beside the latent)."""
    _put(w, p, (("indexer.k_norm.weight", (IDX_HEAD,)), ("indexer.k_norm.bias", (IDX_HEAD,)),
                ("indexer.proj.weight", (E, IDX_HEADS)), ("indexer.attn_k.weight", (E, IDX_HEAD)),
                ("indexer.attn_q_b.weight", (Q_LORA, IDX_HEADS * IDX_HEAD))))  # fmt: skip


def _qsa_indexer(w: GGUFWriter, p: str, heads: int = IDX_HEADS) -> None:
    """MiniMax-M3's and Qwen4-Exp's indexer: Q and K projections with their norms."""
    _put(w, p, (("indexer.q_proj.weight", (E, heads * IDX_HEAD)),
                ("indexer.k_proj.weight", (E, IDX_HEAD)), ("indexer.q_norm.weight", (IDX_HEAD,)),
                ("indexer.k_norm.weight", (IDX_HEAD,))))  # fmt: skip


def _idx_keys(**extra: int) -> dict[str, int]:
    return {"attention.indexer.head_count": IDX_HEADS, "attention.indexer.key_length": IDX_HEAD,
            "attention.indexer.top_k": 64} | extra  # fmt: skip


# --- the builders (src/models/<arch>.cpp: load_arch_hparams and load_arch_tensors) -----------


def bailingmoe3(path: Path, n_layer: int = 4) -> Path:
    """Bailing MoE 3 / Ling 3 (src/models/bailingmoe3.cpp): KDA on the layers with 0 KV heads
    (a full-rank f_a and g_a, a 2-D A), MLA with a full-rank Q and a head-wise gate on the
    others; a leading dense block, then MoE with a shared expert and an expert bias. A hybrid
    whose memory (the default llama_memory_hybrid) filters attention by is_recr alone."""
    kv = [1 if (il + 1) % 4 == 0 else 0 for il in range(n_layer)]
    w = _start(path, "bailingmoe3", _mla_keys(
        n_layer, {"ssm.conv_kernel": D_CONV, "kda.head_dim": KDA}, hybrid=True))  # fmt: skip
    w.add_array("bailingmoe3.attention.head_count_kv", kv)
    w.add_float32("bailingmoe3.kda.gate_lower_bound", -5.0)
    _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _norms(w, p, "attn_norm", "ffn_norm")
        if kv[il]:
            _mla(w, p, q_lora=False)
            _tensor(w, p + "attn_gate.weight", E, N_HEAD)
        else:
            _kda(w, p, low_rank_f=False, gate="g_a")
            _tensor(w, p + "ssm_a", 1, N_HEAD)
        if il == 0:
            _dense_ffn(w, p)
        else:
            _experts(w, p, FF_EXP, q4=False, shared=FF_EXP, bias=True)
    _finish(w)
    return path


def kimi_k3(path: Path, n_layer: int = 4) -> Path:
    """Kimi-K3 (src/models/kimi-k3.cpp): Kimi Linear's KDA (a full-rank ssm_g, a 1-D A) and
    MLA with a sigmoid output gate, cross-layer attention residuals (attn_res.block_size,
    per-layer and output res scores), latent experts (expert_latent_length: the routed experts
    run 128 wide between ffn_routed_down and ffn_routed_up), a leading dense block."""
    latent = 128
    kv = [1 if (il + 1) % 4 == 0 else 0 for il in range(n_layer)]
    w = _start(path, "kimi-k3", _mla_keys(n_layer, hybrid=True, extra={
        "ssm.conv_kernel": D_CONV, "kda.head_dim": KDA, "attn_res.block_size": 2,
        "expert_latent_length": latent, "attention.q_lora_rank": Q_LORA}))  # fmt: skip
    w.add_array("kimi-k3.attention.head_count_kv", kv)
    w.add_float32("kimi-k3.activation.situ_beta", 1.0)
    w.add_float32("kimi-k3.activation.situ_linear_beta", 0.5)
    _output(w)
    _tensor(w, "output_res_score.weight", E)
    for il in range(n_layer):
        p = f"blk.{il}."
        _norms(w, p, "attn_norm", "ffn_norm", "attn_res_score", "ffn_res_score")
        if kv[il]:
            _mla(w, p)
            _tensor(w, p + "attn_gate.weight", E, N_HEAD * V_HEAD)
        else:
            _kda(w, p, low_rank_f=True, gate="g")
            _tensor(w, p + "ssm_a", N_HEAD)
        if il == 0:
            _dense_ffn(w, p)
            continue
        _put(w, p, (("ffn_gate_inp.weight", (E, N_EXP)), ("exp_probs_b.bias", (N_EXP,)),
                    ("ffn_gate_exps.weight", (latent, FF_EXP, N_EXP)),
                    ("ffn_down_exps.weight", (FF_EXP, latent, N_EXP)),
                    ("ffn_up_exps.weight", (latent, FF_EXP, N_EXP)),
                    ("ffn_routed_down.weight", (E, latent)), ("ffn_routed_up.weight", (latent, E)),
                    ("ffn_routed_norm.weight", (latent,)), ("ffn_gate_shexp.weight", (E, FF_EXP)),
                    ("ffn_down_shexp.weight", (FF_EXP, E)), ("ffn_up_shexp.weight", (E, FF_EXP))))  # fmt: skip
    _finish(w)
    return path


def glm5_next(path: Path, n_layer: int = 4) -> Path:
    """GLM-5-Next / GLM-5.3-Flash (src/models/glm5-next.cpp): KDA (low-rank f and g) on the
    layers with 0 KV heads, nope-only MLA (no rope) with a k-pool DSA indexer on the others (its cache rows hold a
    key, a gate and a pooled key: llama_memory_hybrid_idx), four mHC residual streams (hc_*_fn
    (2 + 4) x 4 wide), a leading dense block then MoE with a shared expert."""
    hc, mix = 4, 24
    kv = [1 if (il + 1) % 4 == 0 else 0 for il in range(n_layer)]
    w = _start(path, "glm5-next", _mla_keys(n_layer, hybrid=True, extra={
        "ssm.conv_kernel": D_CONV, "kda.head_dim": KDA, "attention.q_lora_rank": Q_LORA,
        "attention.indexer.kpool": 4, "hyper_connection.count": hc,
        "hyper_connection.sinkhorn_iterations": 4, "rope.dimension_count": 0,
        "attention.key_length": KV_LORA, "attention.key_length_mla": NOPE, **_idx_keys()}))  # fmt: skip
    w.add_array("glm5-next.attention.head_count_kv", kv)
    w.add_float32("glm5-next.hyper_connection.epsilon", 1e-6)
    _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _norms(w, p, "attn_norm", "ffn_norm")
        _put(w, p, (("hc_attn_fn.weight", (hc * E, mix)), ("hc_attn_base.weight", (mix,)),
                    ("hc_attn_scale.weight", (3,)), ("hc_ffn_fn.weight", (hc * E, mix)),
                    ("hc_ffn_base.weight", (mix,)), ("hc_ffn_scale.weight", (3,))))  # fmt: skip
        if kv[il]:
            _mla(w, p, rope=0)  # nope-only (the graph asserts n_rot 0)
            _dsa_indexer(w, p)
            _put(w, p, (("indexer_compressor_gate.weight", (E, IDX_HEAD)),
                        ("indexer_compressor_ape.weight", (IDX_HEAD, 4))))  # fmt: skip
        else:
            _kda(w, p, low_rank_f=True, gate="g_ab")
            _tensor(w, p + "ssm_a", N_HEAD)
        if il == 0:
            _dense_ffn(w, p)
        else:
            _experts(w, p, FF_EXP, q4=False, shared=FF_EXP, bias=True)
    _finish(w)
    return path


def qwen4exp(path: Path, n_layer: int = 4) -> Path:
    """Qwen4-Exp (src/models/qwen4exp.cpp): gated delta nets on three layers of four, gated
    attention (Q twice as wide) with a QSA indexer on the fourth (compress ratio 4: its cache
    rows a key and a pooled key), two low-rank hyper-connection streams (hc_* norms in place of
    the layer norms, no output_norm), M-RoPE sections, every block MoE with a gated shared
    expert."""
    hc, lr = 2, 16
    d_state, n_group, dt_rank = 32, 2, 4
    key_dim, value_dim = d_state * n_group, d_state * dt_rank
    keys = _keys(n_layer, **{
        "ssm.conv_kernel": D_CONV, "ssm.inner_size": value_dim, "ssm.state_size": d_state,
        "ssm.group_count": n_group, "ssm.time_step_rank": dt_rank,
        "expert_feed_forward_length": FF_EXP, "expert_shared_feed_forward_length": FF_EXP,
        "expert_count": N_EXP, "expert_used_count": N_USED, "hyper_connection.count": hc,
        "hyper_connection.low_rank": lr, "attention.compress_ratios": 4, **_idx_keys()})  # fmt: skip
    w = _start(path, "qwen4exp", keys)
    w.add_array("qwen4exp.rope.dimension_sections", [11, 11, 10, 0])
    _tensor(w, "token_embd.weight", E, V)
    _tensor(w, "output.weight", E, V)
    _put(w, "output_", (("hc_norm.weight", (E, hc)), ("hc_down.weight", (hc * E, lr)),
                        ("hc_up.weight", (lr, hc * E))))  # fmt: skip
    for il in range(n_layer):
        p = f"blk.{il}."
        for part in ("attn", "ffn"):
            _put(w, p + f"hc_{part}_", (("norm.weight", (E, hc)), ("down.weight", (hc * E, lr)),
                                        ("up.weight", (lr, hc * E)),
                                        ("inject.weight", (hc * E, hc))))  # fmt: skip
        if (il + 1) % 4 == 0:
            _put(w, p, (("attn_q.weight", (E, 2 * N_HEAD * HEAD)),  # [q | gate] per head
                        ("attn_k.weight", (E, N_KV * HEAD)), ("attn_v.weight", (E, N_KV * HEAD)),
                        ("attn_output.weight", (N_HEAD * HEAD, E))))  # fmt: skip
            _norms(w, p, "attn_q_norm", "attn_k_norm", width=HEAD)
            _qsa_indexer(w, p)
        else:
            _put(w, p, (("attn_qkv.weight", (E, 2 * key_dim + value_dim)),
                        ("attn_gate.weight", (E, value_dim)),
                        ("ssm_conv1d.weight", (D_CONV, 2 * key_dim + value_dim)),
                        ("ssm_dt.bias", (dt_rank,)), ("ssm_a", (dt_rank,)),
                        ("ssm_beta.weight", (E, dt_rank)), ("ssm_alpha.weight", (E, dt_rank)),
                        ("ssm_norm.weight", (d_state,)), ("ssm_out.weight", (value_dim, E))))  # fmt: skip
        _experts(w, p, FF_EXP, q4=False, shared=FF_EXP)
        _tensor(w, p + "ffn_gate_inp_shexp.weight", E)
    _finish(w)
    return path


def hy_v4(path: Path, n_layer: int = 4) -> Path:
    """HY-V4 (src/models/hy-v4.cpp): MLA with attention sinks and a per-element output gate,
    four iHC residual streams (hc_*_fn 2 x 4 wide, an output_hc head), a DSA indexer on the
    layers attention.indexer.types marks (the others reuse its top-k: no indexer cache), a
    leading dense block then MoE with a shared expert."""
    hc = 4
    types = [1, 0, 1, 0][:n_layer]
    w = _start(path, "hy_v4", _mla_keys(n_layer, {
        "attention.q_lora_rank": Q_LORA, "hyper_connection.count": hc, **_idx_keys()}))  # fmt: skip
    w.add_array("hy_v4.attention.indexer.types", types)
    w.add_float32("hy_v4.hyper_connection.epsilon", 1e-6)
    w.add_float32("hy_v4.hyper_connection.magnitude", 1.0)
    _output(w)
    _put(w, "output_", (("hc_fn.weight", (hc * E, hc)), ("hc_base.weight", (hc,)),
                        ("hc_scale.weight", (1,))))  # fmt: skip
    for il in range(n_layer):
        p = f"blk.{il}."
        _norms(w, p, "attn_norm", "ffn_norm")
        _mla(w, p)
        _put(w, p, (("attn_sinks.weight", (N_HEAD,)), ("attn_gate.weight", (E, N_HEAD * V_HEAD)),
                    ("hc_attn_fn.weight", (hc * E, 2 * hc)), ("hc_attn_base.weight", (2 * hc,)),
                    ("hc_attn_scale.weight", (2,)), ("hc_ffn_fn.weight", (hc * E, 2 * hc)),
                    ("hc_ffn_base.weight", (2 * hc,)), ("hc_ffn_scale.weight", (2,))))  # fmt: skip
        if types[il]:
            _dsa_indexer(w, p)
        if il == 0:
            _dense_ffn(w, p)
        else:
            _experts(w, p, FF_EXP, q4=False, shared=FF_EXP, bias=True)
    _finish(w)
    return path


def dots3note(path: Path, n_layer: int = 4) -> Path:
    """dots3-note (src/models/dots3note.cpp): MLA everywhere, the windowed layers (the required
    sliding_window_pattern) with a narrower latent (kv_lora_rank_swa: their K head
    key_length_swa wide), a K norm on the rope key, a head-wise gate, a DSA indexer on the
    layers the required indexer.types marks (llama_kv_cache_dsa_iswa), a leading dense block
    then MoE with a shared expert."""
    kv_lora_swa = 32
    swa = [False, True, True, False][:n_layer]
    w = _start(path, "dots3note", _mla_keys(n_layer, {
        "attention.q_lora_rank": Q_LORA, "attention.kv_lora_rank_swa": kv_lora_swa,
        "attention.key_length_mla_swa": NOPE + ROPE, "attention.value_length_mla_swa": V_HEAD,
        "attention.key_length_swa": kv_lora_swa + ROPE, "attention.value_length_swa": kv_lora_swa,
        "attention.sliding_window": 128, **_idx_keys()}))  # fmt: skip
    w.add_float32("dots3note.rope.freq_base_swa", 1e4)
    w.add_array("dots3note.attention.sliding_window_pattern", swa)
    w.add_array("dots3note.attention.indexer.types", [int(not s) for s in swa])
    _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _norms(w, p, "attn_norm", "ffn_norm")
        _mla(w, p, kv_lora=kv_lora_swa if swa[il] else KV_LORA)
        _put(w, p, (("attn_k_norm.weight", (ROPE,)), ("attn_gate.weight", (E, N_HEAD))))
        if not swa[il]:
            _dsa_indexer(w, p)
        if il == 0:
            _dense_ffn(w, p)
        else:
            _experts(w, p, FF_EXP, q4=False, shared=FF_EXP, bias=True)
    _finish(w)
    return path


def minimax_m3(path: Path, n_layer: int = 3) -> Path:
    """MiniMax-M3 (src/models/minimax-m3.cpp, llama-kv-cache-msa.cpp): GQA with per-head Q/K
    norms and MiniMax sparse attention: past the leading dense block each layer an indexer (Q
    and K projections) whose keys the MSA cache holds beside a V row; MoE with a shared expert
    and an expert bias."""
    w = _start(path, "minimax-m3", _keys(n_layer, **{
        "expert_feed_forward_length": FF_EXP, "expert_shared_count": 1,
        "leading_dense_block_count": 1, "expert_count": N_EXP, "expert_used_count": N_USED,
        "expert_gating_func": 2, "attention.indexer.block_size": 64,
        "attention.indexer.local_blocks": 1,
        **_idx_keys(**{"attention.indexer.top_k": 4, "attention.indexer.head_count": N_KV})}))  # fmt: skip
    _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p)
        _norms(w, p, "attn_norm", "ffn_norm")
        _norms(w, p, "attn_q_norm", "attn_k_norm", width=HEAD)
        if il == 0:
            _dense_ffn(w, p)
        else:
            _experts(w, p, FF_EXP, q4=False, shared=FF_EXP, bias=True)
            _qsa_indexer(w, p, N_KV)  # one indexer head per KV group (its graph asserts it)
    _finish(w)
    return path


def laguna(path: Path, n_layer: int = 4) -> Path:
    """Laguna (src/models/laguna.cpp): per-layer head counts (the windowed layers more), a
    128-token window on three layers of four (load_swa_pattern(4, dense_first): the first of
    each four full), Q/K norms, a head-wise softplus gate, a leading dense block then MoE with
    a shared expert and an expert bias."""
    heads = [N_HEAD if il % 4 == 0 else 6 for il in range(n_layer)]
    keys = _keys(n_layer, **{
        "expert_feed_forward_length": FF_EXP, "expert_shared_feed_forward_length": FF_EXP,
        "expert_count": N_EXP, "expert_used_count": N_USED, "leading_dense_block_count": 1,
        "attention.sliding_window": 128})  # fmt: skip
    del keys["attention.head_count"]
    w = _start(path, "laguna", keys)
    w.add_array("laguna.attention.head_count", heads)
    _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p, n_head=heads[il])
        _tensor(w, p + "attn_gate.weight", E, heads[il])
        _norms(w, p, "attn_norm", "ffn_norm")
        _norms(w, p, "attn_q_norm", "attn_k_norm", width=HEAD)
        if il == 0:
            _dense_ffn(w, p)
        else:
            _experts(w, p, FF_EXP, q4=False, shared=FF_EXP, bias=True)
    _finish(w)
    return path


def _diffusion_moe(path: Path, arch: str, n_layer: int = 3) -> Path:
    """A Qwen3-MoE-shaped diffusion LM: non-causal attention with Q/K norms, every block MoE;
    llama_model::create_memory gives it no memory at all."""
    w = _start(path, arch, _keys(n_layer, **{"expert_feed_forward_length": FF_EXP,
                                             "expert_count": N_EXP, "expert_used_count": N_USED,
                                             "attention.head_count_kv": N_HEAD}))  # fmt: skip
    _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p, n_kv=N_HEAD)
        _norms(w, p, "attn_norm", "ffn_norm")
        _norms(w, p, "attn_q_norm", "attn_k_norm", width=HEAD)
        _experts(w, p, FF_EXP, q4=False)
    _finish(w)
    return path


def rnd1(path: Path) -> Path:
    """RND1 (src/models/rnd1.cpp): Qwen3-MoE converted to a diffusion model."""
    return _diffusion_moe(path, "rnd1")


def llada_moe(path: Path) -> Path:
    """LLaDA-MoE (src/models/llada-moe.cpp): Q/K/V n_embd wide (n_head_kv = n_head), untied."""
    return _diffusion_moe(path, "llada-moe")


# --- the checks --------------------------------------------------------------------------------

BUILDERS: list[Builder] = [
    bailingmoe3, kimi_k3, glm5_next, qwen4exp, hy_v4, dots3note, minimax_m3, laguna,
]  # fmt: skip
DIFFUSION: list[Builder] = [rnd1, llada_moe]  # served with --embedding


@pytest.mark.parametrize("build", BUILDERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(("ctx", "slots", "fa"), SETTINGS)
def test_cache_state_and_weights_are_what_llama_server_allocates(
    tmp_path_factory: pytest.TempPathFactory, build: Builder, ctx: int, slots: int, fa: bool
) -> None:
    """KV cache (indexer caches included) and recurrent state to the log's 0.01 MiB, the
    host's weights to 0.02 MiB."""
    _check_cache_and_weights(measure(tmp_path_factory, build, ctx, slots, fa))


@pytest.mark.parametrize("build", BUILDERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(("ctx", "slots", "fa"), SETTINGS)
def test_compute_buffer_is_never_under_llama_servers(
    tmp_path_factory: pytest.TempPathFactory, build: Builder, ctx: int, slots: int, fa: bool
) -> None:
    """The plan's compute buffer is never under the logged one."""
    logged, plan = measure(tmp_path_factory, build, ctx, slots, fa)["compute"]
    assert plan >= logged, f"compute {_mib((logged, plan))} ({(plan - logged) / MIB:+.2f})"


@pytest.mark.parametrize("build", DIFFUSION, ids=lambda f: f.__name__)
@pytest.mark.parametrize(("ctx", "slots", "fa"), SETTINGS)
def test_a_diffusion_model_is_what_llama_server_allocates(
    tmp_path_factory: pytest.TempPathFactory, build: Builder, ctx: int, slots: int, fa: bool
) -> None:
    """RND1 and LLaDA-MoE get no memory (create_memory: nullptr; no KV whatever the context),
    their weights, and a compute buffer never under the log."""
    m = measure(tmp_path_factory, build, ctx, slots, fa, extra=("--embedding",))
    assert m["KV"][0] == 0
    _check_cache_and_weights(m)
    logged, plan = m["compute"]
    assert plan >= logged, f"compute {_mib((logged, plan))} ({(plan - logged) / MIB:+.2f})"


_T, _F = True, False
# What the plan must read off each file, as llama.cpp's loaders set it
LAYOUT: dict[str, dict[str, object]] = {
    "bailingmoe3": {"n_head_kv": [0, 0, 0, 1], "recurrent_layers": [_T, _T, _T, _F],
                    "mla": True},
    "kimi_k3": {"n_head_kv": [0, 0, 0, 1], "recurrent_layers": [_T, _T, _T, _F], "mla": True},
    "glm5_next": {"n_head_kv": [0, 0, 0, 1], "recurrent_layers": [_T, _T, _T, _F], "mla": True,
                  "indexer_layers": [_F, _F, _F, _T], "indexer_k": 3 * IDX_HEAD},
    "qwen4exp": {"n_head_kv": [0, 0, 0, N_KV], "recurrent_layers": [_T, _T, _T, _F],
                 "indexer_layers": [_F, _F, _F, _T], "indexer_k": 2 * IDX_HEAD},
    "hy_v4": {"mla": True, "n_head_kv": [1] * 4, "indexer_layers": [_T, _F, _T, _F]},
    "dots3note": {"mla": True, "swa_layers": [_F, _T, _T, _F], "sliding_window": 128,
                  "indexer_layers": [_T, _F, _F, _T], "head_dim_k_swa": 32 + ROPE},
    "minimax_m3": {"indexer_layers": [_F, _T, _T], "indexer_k": IDX_HEAD},
    "laguna": {"swa_layers": [_F, _T, _T, _T], "sliding_window": 128, "n_head": 6},
    "rnd1": {"no_memory": True},
    "llada_moe": {"no_memory": True},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(LAYOUT))
def test_the_plan_reads_the_layout_llama_cpp_loads(tmp_path: Path, name: str) -> None:
    """What the plan reads off each file is what llama.cpp's loader sets."""
    arch = facts_from_gguf(globals()[name](tmp_path / "m.gguf")).arch
    for field, want in LAYOUT[name].items():
        assert getattr(arch, field) == want, field


@pytest.mark.parametrize(("n_layer", "fa"), [(8, True), (16, True), (16, False)])
def test_kimi_k3_banked_layer_inputs_grow_with_its_layers(
    tmp_path: Path, n_layer: int, fa: bool
) -> None:
    """Kimi-K3's cross-layer residual attention keeps every banked layer input (one a block of
    attn_res.block_size layers) and its scoring copies alive to the end: the compute buffer
    grows about 1.5 MiB a checkpoint here. Never under, at most 6 MiB over."""
    path = kimi_k3(tmp_path / "m.gguf", n_layer=n_layer)
    logged, _ = _serve(path, 8192, 1, fa)
    arch = facts_from_gguf(path).arch
    assert arch.residual_checkpoints == n_layer // 2
    plan = compute_bytes(arch, FitSettings(ctx=8192, flash_attention=fa))
    got = logged.get("host", "compute")
    assert got <= plan <= got + 6 * MIB, _mib((got, plan))
