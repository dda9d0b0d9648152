"""The plan's KV cache, recurrent state, weights and compute buffer against a real llama-server,
on small real-shaped files of the recurrent and hybrid architectures: the wholly recurrent ones
(Mamba, Mamba 2, RWKV 6 and 7: a state per slot and no KV cache), and the hybrids, each with
its own rule for which layers attend (Jamba, PLaMo 2, Granite hybrid, LFM2 and Kimi Linear: the
layers with KV heads; Nemotron-H: the layers with KV heads and no feed-forward, beside MLP-only
layers; Falcon-H1: every layer both; Qwen3-Next: every 4th, with an MTP block). Weights are
zeros; what llama-server logs is what is checked. Shapes follow llama.cpp's own converters
(conversion/*.py of the pinned build) and its loaders (src/models/<arch>.cpp)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

Shape = tuple[int, ...]


def _tensors(w: GGUFWriter, prefix: str, spec: list[tuple[str, Shape]]) -> None:
    for name, shape in spec:
        _tensor(w, prefix + name, *shape)


def _tied(w: GGUFWriter, norm: str = "output_norm.weight") -> None:
    """token_embd and the output norm; the output matrix is token_embd (tied)."""
    _tensor(w, "token_embd.weight", E, V)
    _tensor(w, norm, E)


def _swiglu(ff: int = FF) -> list[tuple[str, Shape]]:
    return [("ffn_gate.weight", (E, ff)), ("ffn_down.weight", (ff, E)), ("ffn_up.weight", (E, ff))]


def _attention(n_head: int, n_kv: int, head: int) -> list[tuple[str, Shape]]:
    return [
        ("attn_q.weight", (E, n_head * head)), ("attn_k.weight", (E, n_kv * head)),
        ("attn_v.weight", (E, n_kv * head)), ("attn_output.weight", (n_head * head, E)),
    ]  # fmt: skip


def _experts(n_exp: int, ff: int) -> list[tuple[str, Shape]]:
    return [
        ("ffn_gate_inp.weight", (E, n_exp)), ("ffn_gate_exps.weight", (E, ff, n_exp)),
        ("ffn_down_exps.weight", (ff, E, n_exp)), ("ffn_up_exps.weight", (E, ff, n_exp)),
    ]  # fmt: skip


def _mamba2_mixer(d_conv: int, d_inner: int, d_state: int, n_group: int, n_heads: int,
                  *, z_in_proj: bool = True) -> list[tuple[str, Shape]]:  # fmt: skip
    """A Mamba-2 mixer (src/models/mamba-base.cpp, build_mamba2_layer): in_proj to z, x, B, C
    and dt; a convolution over x, B and C; a head's A, D and dt bias; a grouped norm."""
    conv_dim = d_inner + 2 * n_group * d_state
    d_in_proj = d_inner + conv_dim + n_heads if z_in_proj else conv_dim + n_heads
    return [
        ("ssm_in.weight", (E, d_in_proj)), ("ssm_conv1d.weight", (d_conv, conv_dim)),
        ("ssm_conv1d.bias", (conv_dim,)), ("ssm_dt.bias", (n_heads,)), ("ssm_a", (1, n_heads)),
        ("ssm_d", (1, n_heads)), ("ssm_norm.weight", (d_inner // n_group, n_group)),
        ("ssm_out.weight", (d_inner, E)),
    ]  # fmt: skip


def _mamba1_mixer(d_conv: int, d_inner: int, d_state: int, dt_rank: int) -> list[tuple[str, Shape]]:
    """A Mamba-1 mixer (build_mamba_layer): a per-channel A of d_state."""
    return [
        ("ssm_in.weight", (E, 2 * d_inner)), ("ssm_conv1d.weight", (d_conv, d_inner)),
        ("ssm_conv1d.bias", (d_inner,)), ("ssm_x.weight", (d_inner, dt_rank + 2 * d_state)),
        ("ssm_dt.weight", (dt_rank, d_inner)), ("ssm_dt.bias", (d_inner,)),
        ("ssm_a", (d_state, d_inner)), ("ssm_d", (d_inner,)), ("ssm_out.weight", (d_inner, E)),
    ]  # fmt: skip


# --- wholly recurrent -----------------------------------------------------------------------


def mamba(path: Path, n_layer: int = 4) -> Path:
    """Mamba (conversion/mamba.py): head_count 0, an expansion of 2, dt_rank ceil(E / 16);
    tied embeddings."""
    d_conv, d_inner, d_state, dt_rank = 4, 2 * E, 16, E // 16
    w = _start(path, "mamba", {
        "block_count": n_layer, "embedding_length": E, "context_length": 2**20,
        "feed_forward_length": 0, "attention.head_count": 0, "ssm.conv_kernel": d_conv,
        "ssm.inner_size": d_inner, "ssm.state_size": d_state, "ssm.time_step_rank": dt_rank,
    })  # fmt: skip
    _tied(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _tensor(w, p + "attn_norm.weight", E)
        _tensors(w, p, _mamba1_mixer(d_conv, d_inner, d_state, dt_rank))
    _finish(w)
    return path


def mamba2(path: Path, n_layer: int = 4) -> Path:
    """Mamba 2 (conversion/mamba.py Mamba2Model): heads of 64, grouped B and C."""
    d_conv, d_inner, d_state, n_group = 4, 2 * E, 32, 2
    n_heads = d_inner // 64
    w = _start(path, "mamba2", {
        "block_count": n_layer, "embedding_length": E, "context_length": 2**20,
        "feed_forward_length": 0, "attention.head_count": 0, "ssm.conv_kernel": d_conv,
        "ssm.inner_size": d_inner, "ssm.state_size": d_state, "ssm.time_step_rank": n_heads,
        "ssm.group_count": n_group,
    })  # fmt: skip
    _tied(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _tensor(w, p + "attn_norm.weight", E)
        _tensors(w, p, _mamba2_mixer(d_conv, d_inner, d_state, n_group, n_heads))
    _finish(w)
    return path


def rwkv6(path: Path, n_layer: int = 4, ff: int = FF) -> Path:
    """RWKV 6 (src/models/rwkv6.cpp): token shift, a head_size-wide WKV state per channel."""
    head, mix, decay = 64, 32, 64
    w = _start(path, "rwkv6", {
        "block_count": n_layer, "embedding_length": E, "context_length": 1048576,
        "feed_forward_length": ff, "attention.head_count": 0, "wkv.head_size": head,
        "time_mix_extra_dim": mix, "time_decay_extra_dim": decay, "rescale_every_n_layers": 6,
    })  # fmt: skip
    w.add_float32("rwkv6.attention.layer_norm_epsilon", 1e-5)
    _tensor(w, "token_embd.weight", E, V)
    _tensor(w, "token_embd_norm.weight", E)
    _tensor(w, "token_embd_norm.bias", E)
    _tensor(w, "output_norm.weight", E)
    _tensor(w, "output_norm.bias", E)
    _tensor(w, "output.weight", E, V)
    for il in range(n_layer):
        _tensors(w, f"blk.{il}.", [
            ("attn_norm.weight", (E,)), ("attn_norm.bias", (E,)), ("attn_norm_2.weight", (E,)),
            ("attn_norm_2.bias", (E,)), ("time_mix_w1.weight", (E, mix * 5)),
            ("time_mix_w2.weight", (mix, E, 5)), ("time_mix_lerp_x.weight", (E, 1, 1)),
            ("time_mix_lerp_fused.weight", (E, 1, 1, 5)),
            ("time_mix_first.weight", (head, E // head)), ("time_mix_decay.weight", (E,)),
            ("time_mix_decay_w1.weight", (E, decay)), ("time_mix_decay_w2.weight", (decay, E)),
            ("time_mix_key.weight", (E, E)), ("time_mix_value.weight", (E, E)),
            ("time_mix_receptance.weight", (E, E)), ("time_mix_gate.weight", (E, E)),
            ("time_mix_ln.weight", (E,)), ("time_mix_ln.bias", (E,)),
            ("time_mix_output.weight", (E, E)), ("channel_mix_lerp_k.weight", (E, 1, 1)),
            ("channel_mix_lerp_r.weight", (E, 1, 1)), ("channel_mix_key.weight", (E, ff)),
            ("channel_mix_value.weight", (ff, E)), ("channel_mix_receptance.weight", (E, E)),
        ])  # fmt: skip
    _finish(w)
    return path


def rwkv7(path: Path, n_layer: int = 4, ff: int = FF) -> Path:
    """RWKV 7 (src/models/rwkv7.cpp): the decay, ICLR, value-mix and gate LoRAs."""
    head, decay, iclr, vmix, gate = 64, 32, 32, 32, 64
    w = _start(path, "rwkv7", {
        "block_count": n_layer, "embedding_length": E, "context_length": 1048576,
        "feed_forward_length": ff, "attention.head_count": 0, "wkv.head_size": head,
        "attention.decay_lora_rank": decay, "attention.iclr_lora_rank": iclr,
        "attention.value_residual_mix_lora_rank": vmix, "attention.gate_lora_rank": gate,
    })  # fmt: skip
    w.add_float32("rwkv7.attention.layer_norm_epsilon", 1e-5)
    _tensor(w, "token_embd.weight", E, V)
    _tensor(w, "token_embd_norm.weight", E)
    _tensor(w, "token_embd_norm.bias", E)
    _tensor(w, "output_norm.weight", E)
    _tensor(w, "output_norm.bias", E)
    _tensor(w, "output.weight", E, V)
    for il in range(n_layer):
        v_rank = iclr if il == 0 else vmix
        _tensors(w, f"blk.{il}.", [
            ("attn_norm.weight", (E,)), ("attn_norm.bias", (E,)), ("attn_norm_2.weight", (E,)),
            ("attn_norm_2.bias", (E,)), ("time_mix_w0.weight", (E,)),
            ("time_mix_w1.weight", (E, decay)), ("time_mix_w2.weight", (decay, E)),
            ("time_mix_a0.weight", (E,)), ("time_mix_a1.weight", (E, iclr)),
            ("time_mix_a2.weight", (iclr, E)), ("time_mix_v0.weight", (E,)),
            ("time_mix_v1.weight", (E, v_rank)), ("time_mix_v2.weight", (v_rank, E)),
            ("time_mix_g1.weight", (E, gate)), ("time_mix_g2.weight", (gate, E)),
            ("time_mix_lerp_fused.weight", (E, 1, 1, 6)), ("time_mix_k_k.weight", (E,)),
            ("time_mix_k_a.weight", (E,)), ("time_mix_r_k.weight", (E,)),
            ("time_mix_key.weight", (E, E)), ("time_mix_value.weight", (E, E)),
            ("time_mix_receptance.weight", (E, E)), ("time_mix_ln.weight", (E,)),
            ("time_mix_ln.bias", (E,)), ("time_mix_output.weight", (E, E)),
            ("channel_mix_lerp_k.weight", (E, 1, 1)), ("channel_mix_key.weight", (E, ff)),
            ("channel_mix_value.weight", (ff, E)),
        ])  # fmt: skip
    _finish(w)
    return path


# --- hybrids ----------------------------------------------------------------------------------


def jamba(path: Path, n_layer: int = 8) -> Path:
    """Jamba (conversion/jamba.py): attention every attn_layer_period layers from an offset
    (here 4 and 2: layers 2 and 6), Mamba-1 mixers elsewhere, experts on every other layer."""
    n_head, n_kv, head, n_exp = 4, 2, 64, 4
    d_conv, d_inner, d_state, dt_rank = 4, 2 * E, 16, E // 16
    kv = [n_kv if il % 4 == 2 else 0 for il in range(n_layer)]
    w = _start(path, "jamba", {
        "block_count": n_layer, "embedding_length": E, "context_length": 262144,
        "feed_forward_length": FF, "attention.head_count": n_head, "ssm.conv_kernel": d_conv,
        "ssm.inner_size": d_inner, "ssm.state_size": d_state, "ssm.time_step_rank": dt_rank,
        "expert_count": n_exp, "expert_used_count": 2,
    })  # fmt: skip
    w.add_array("jamba.attention.head_count_kv", kv)
    _embeddings(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _tensor(w, p + "attn_norm.weight", E)
        if kv[il]:
            _tensors(w, p, _attention(n_head, n_kv, head))
        else:
            _tensors(w, p, _mamba1_mixer(d_conv, d_inner, d_state, dt_rank))
            _tensors(w, p, [("ssm_dt_norm.weight", (dt_rank,)), ("ssm_b_norm.weight", (d_state,)),
                            ("ssm_c_norm.weight", (d_state,))])  # fmt: skip
        _tensor(w, p + "ffn_norm.weight", E)
        _tensors(w, p, _experts(n_exp, FF) if il % 2 else _swiglu())
    _finish(w)
    return path


def falcon_h1(path: Path, n_layer: int = 4) -> Path:
    """Falcon-H1 (conversion/falcon_h1.py): every layer runs attention and a Mamba-2 mixer side
    by side, then an MLP."""
    n_head, n_kv, head = 4, 2, 64
    d_conv, d_inner, d_state, n_group, n_heads = 4, 2 * E, 32, 1, 8
    w = _start(path, "falcon-h1", {
        "block_count": n_layer, "embedding_length": E, "context_length": 16384,
        "feed_forward_length": FF, "attention.head_count": n_head,
        "attention.head_count_kv": n_kv, "attention.key_length": head,
        "attention.value_length": head, "ssm.conv_kernel": d_conv, "ssm.inner_size": d_inner,
        "ssm.state_size": d_state, "ssm.time_step_rank": n_heads, "ssm.group_count": n_group,
        "vocab_size": V,
    })  # fmt: skip
    _embeddings(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _tensors(w, p, _mamba2_mixer(d_conv, d_inner, d_state, n_group, n_heads))
        _tensors(w, p, _attention(n_head, n_kv, head))
        _tensor(w, p + "attn_norm.weight", E)
        _tensor(w, p + "ffn_norm", E)  # the loader asks for it without a ".weight"
        _tensors(w, p, _swiglu())
    _finish(w)
    return path


def nemotron_h(path: Path, pattern: str = "M-M*M-M*") -> Path:
    """Nemotron-H (conversion/nemotron.py): a pattern of Mamba-2 (M), attention (*) and MLP (-)
    layers; head_count_kv and feed_forward_length per layer, zero where the kind has none."""
    n_head, n_kv, head = 4, 2, 64
    d_conv, d_inner, d_state, n_group, n_heads = 4, 2 * E, 32, 2, 8
    n_layer = len(pattern)
    w = _start(path, "nemotron_h", {
        "block_count": n_layer, "embedding_length": E, "context_length": 8192,
        "attention.head_count": n_head, "attention.key_length": head,
        "attention.value_length": head, "ssm.conv_kernel": d_conv, "ssm.inner_size": d_inner,
        "ssm.state_size": d_state, "ssm.time_step_rank": n_heads, "ssm.group_count": n_group,
    })  # fmt: skip
    w.add_array("nemotron_h.attention.head_count_kv", [n_kv if c == "*" else 0 for c in pattern])
    w.add_array("nemotron_h.feed_forward_length", [FF if c == "-" else 0 for c in pattern])
    w.add_float32("nemotron_h.attention.layer_norm_epsilon", 1e-5)
    _embeddings(w)
    for il, kind in enumerate(pattern):
        p = f"blk.{il}."
        _tensor(w, p + "attn_norm.weight", E)
        if kind == "M":
            _tensors(w, p, _mamba2_mixer(d_conv, d_inner, d_state, n_group, n_heads,
                                         z_in_proj=True))  # fmt: skip
        elif kind == "*":
            _tensors(w, p, _attention(n_head, n_kv, head))
        else:  # squared-ReLU MLP: up and down
            _tensors(w, p, [("ffn_down.weight", (FF, E)), ("ffn_up.weight", (E, FF))])
    _finish(w)
    return path


def granite_hybrid(path: Path, n_layer: int = 8) -> Path:
    """Granite 4.0-H (conversion/granite.py GraniteHybridModel): attention on a few layers
    (head_count_kv per layer), Mamba-2 elsewhere, MoE with a shared expert on every layer;
    no RoPE (rope finetuned off), tied embeddings."""
    n_head, n_kv, head, n_exp, ff_exp = 4, 2, 64, 4, 128
    d_conv, d_inner, d_state, n_group, n_heads = 4, 2 * E, 32, 1, 8
    kv = [n_kv if il % 4 == 3 else 0 for il in range(n_layer)]
    w = _start(path, "granitehybrid", {
        "block_count": n_layer, "embedding_length": E, "context_length": 2**20,
        "feed_forward_length": ff_exp, "attention.head_count": n_head,
        "ssm.conv_kernel": d_conv, "ssm.inner_size": d_inner, "ssm.state_size": d_state,
        "ssm.time_step_rank": n_heads, "ssm.group_count": n_group, "expert_count": n_exp,
        "expert_used_count": 2, "expert_shared_feed_forward_length": FF, "vocab_size": V,
    })  # fmt: skip
    w.add_array("granitehybrid.attention.head_count_kv", kv)
    w.add_bool("granitehybrid.rope.scaling.finetuned", False)
    for key, value in (("logit_scale", 8.0), ("residual_scale", 0.22), ("embedding_scale", 12.0),
                       ("attention.scale", 0.0078125)):  # fmt: skip
        w.add_float32(f"granitehybrid.{key}", value)
    _tied(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _tensor(w, p + "attn_norm.weight", E)
        if kv[il]:
            _tensors(w, p, _attention(n_head, n_kv, head))
        else:
            _tensors(w, p, _mamba2_mixer(d_conv, d_inner, d_state, n_group, n_heads))
        _tensor(w, p + "ffn_norm.weight", E)
        _tensors(w, p, _experts(n_exp, ff_exp))
        _tensors(w, p, [("ffn_gate_shexp.weight", (E, FF)), ("ffn_up_shexp.weight", (E, FF)),
                        ("ffn_down_shexp.weight", (FF, E))])  # fmt: skip
    _finish(w)
    return path


def _lfm2(path: Path, n_layer: int, window: int) -> Path:
    """LFM2 (conversion/lfm2.py): short-convolution layers (0 KV heads) and attention layers
    with Q/K norms; tied embeddings, the final norm named token_embd_norm."""
    n_head, n_kv, head, l_cache = 4, 2, E // 4, 3
    kv = [n_kv if il % 3 == 2 else 0 for il in range(n_layer)]
    keys = {
        "block_count": n_layer, "embedding_length": E, "context_length": 128000,
        "feed_forward_length": FF, "attention.head_count": n_head, "shortconv.l_cache": l_cache,
        "vocab_size": V,
    }  # fmt: skip
    if window:
        keys["attention.sliding_window"] = window
    w = _start(path, "lfm2", keys)
    w.add_array("lfm2.attention.head_count_kv", kv)
    _tied(w, "token_embd_norm.weight")
    for il in range(n_layer):
        p = f"blk.{il}."
        _tensors(w, p, [("ffn_norm.weight", (E,)), *_swiglu(), ("attn_norm.weight", (E,))])
        if kv[il]:
            _tensors(w, p, [("attn_q_norm.weight", (head,)), ("attn_k_norm.weight", (head,)),
                            *_attention(n_head, n_kv, head)])  # fmt: skip
        else:
            _tensors(w, p, [("shortconv.conv.weight", (l_cache, E)),
                            ("shortconv.in_proj.weight", (E, 3 * E)),
                            ("shortconv.out_proj.weight", (E, E))])  # fmt: skip
    _finish(w)
    return path


def lfm2(path: Path) -> Path:
    return _lfm2(path, 6, 0)


def lfm2_window(path: Path) -> Path:
    """LFM2 with a sliding window: its attention layers slide (a hybrid iSWA memory)."""
    return _lfm2(path, 6, 512)


def plamo2(path: Path, n_layer: int = 4) -> Path:
    """PLaMo 2 (conversion/plamo.py Plamo2Model): Mamba on even layers (mamba_step 2),
    attention on odd ones; head_count and head_count_kv per layer (0 on Mamba layers)."""
    n_head, n_kv, head = 4, 2, 64
    d_conv, d_state, n_heads = 4, 16, 8
    d_inner, dt_dim = n_heads * head, max(64, E // 16)
    attn = [il % 2 == 1 for il in range(n_layer)]
    w = _start(path, "plamo2", {
        "block_count": n_layer, "embedding_length": E, "context_length": 32768,
        "feed_forward_length": FF, "attention.key_length": head, "attention.value_length": head,
        "ssm.conv_kernel": d_conv, "ssm.inner_size": d_inner, "ssm.state_size": d_state,
        "ssm.time_step_rank": n_heads, "ssm.group_count": 0, "vocab_size": V,
    })  # fmt: skip
    w.add_array("plamo2.attention.head_count", [n_head if a else 0 for a in attn])
    w.add_array("plamo2.attention.head_count_kv", [n_kv if a else 0 for a in attn])
    _tied(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _tensor(w, p + "attn_norm.weight", E)
        if attn[il]:
            _tensors(w, p, [
                ("attn_qkv.weight", (E, (n_head + 2 * n_kv) * head)),
                ("attn_q_norm.weight", (head, n_head)), ("attn_k_norm.weight", (head, n_kv)),
                ("attn_output.weight", (n_head * head, E)),
            ])  # fmt: skip
        else:
            _tensors(w, p, [
                ("ssm_in.weight", (E, 2 * d_inner)), ("ssm_conv1d.weight", (d_conv, d_inner)),
                ("ssm_x.weight", (d_inner, dt_dim + 2 * d_state)),
                ("ssm_dt.weight", (dt_dim, n_heads)), ("ssm_dt.bias", (n_heads,)),
                ("ssm_a", (n_heads,)), ("ssm_d", (n_heads,)), ("ssm_out.weight", (d_inner, E)),
                ("ssm_dt_norm", (dt_dim,)), ("ssm_b_norm", (d_state,)), ("ssm_c_norm", (d_state,)),
            ])  # fmt: skip
        _tensors(w, p, [("post_attention_norm", (E,)), ("ffn_norm.weight", (E,)),
                        ("ffn_down.weight", (FF, E)), ("ffn_up.weight", (E, 2 * FF)),
                        ("post_ffw_norm", (E,))])  # fmt: skip
    _finish(w)
    return path


def qwen3next(
    path: Path,
    n_layer: int = 4,
    nextn: int = 1,
    *,
    head_v: int = 32,
    n_k: int = 2,
    n_v: int = 4,
    ff_exp: int = 128,
    n_used: int = 2,
    shexp: int = FF,
) -> Path:
    """Qwen3-Next (src/models/qwen3next.cpp): every 4th layer gated attention, the rest gated
    delta nets; MoE with a gated shared expert; the last `nextn` blocks an MTP head (skipped:
    neither weights nor cache)."""
    n_head, n_kv, head, n_exp = 4, 2, 64, max(4, n_used)
    d_conv, d_state, n_group, dt_rank = 4, head_v, n_k, n_v
    key_dim, value_dim = d_state * n_group, d_state * dt_rank
    n_all = n_layer + nextn
    w = _start(path, "qwen3next", {
        "block_count": n_all, "embedding_length": E, "context_length": 262144,
        "feed_forward_length": FF, "attention.head_count": n_head,
        "attention.head_count_kv": n_kv, "attention.key_length": head,
        "attention.value_length": head, "rope.dimension_count": head // 4,
        "expert_count": n_exp, "expert_used_count": n_used, "expert_feed_forward_length": ff_exp,
        "expert_shared_feed_forward_length": shexp, "ssm.conv_kernel": d_conv,
        "ssm.inner_size": value_dim, "ssm.state_size": d_state, "ssm.group_count": n_group,
        "ssm.time_step_rank": dt_rank, "nextn_predict_layers": nextn,
    })  # fmt: skip
    _embeddings(w)
    for il in range(n_all):
        p = f"blk.{il}."
        _tensors(w, p, [("attn_norm.weight", (E,)), ("post_attention_norm.weight", (E,))])
        if il >= n_layer or (il + 1) % 4 == 0:
            _tensors(w, p, [
                ("attn_q.weight", (E, head * n_head * 2)), ("attn_k.weight", (E, head * n_kv)),
                ("attn_v.weight", (E, head * n_kv)), ("attn_output.weight", (head * n_head, E)),
                ("attn_q_norm.weight", (head,)), ("attn_k_norm.weight", (head,)),
            ])  # fmt: skip
        else:
            _tensors(w, p, [
                ("attn_qkv.weight", (E, 2 * key_dim + value_dim)),
                ("attn_gate.weight", (E, value_dim)),
                ("ssm_conv1d.weight", (d_conv, 2 * key_dim + value_dim)),
                ("ssm_dt.bias", (dt_rank,)), ("ssm_a", (dt_rank,)),
                ("ssm_ba.weight", (E, 2 * dt_rank)), ("ssm_norm.weight", (d_state,)),
                ("ssm_out.weight", (value_dim, E)),
            ])  # fmt: skip
        _tensors(w, p, [*_experts(n_exp, ff_exp), ("ffn_gate_inp_shexp.weight", (E,)),
                        ("ffn_gate_shexp.weight", (E, shexp)), ("ffn_up_shexp.weight", (E, shexp)),
                        ("ffn_down_shexp.weight", (shexp, E))])  # fmt: skip
        if il >= n_layer:
            _tensors(w, p, [("nextn.eh_proj.weight", (2 * E, E)), ("nextn.enorm.weight", (E,)),
                            ("nextn.hnorm.weight", (E,)),
                            ("nextn.shared_head_norm.weight", (E,))])  # fmt: skip
    _finish(w)
    return path


def kimi_linear(
    path: Path,
    n_layer: int = 4,
    *,
    kda: int = 64,
    n_head: int = 4,
    ff_exp: int = 128,
    n_used: int = 2,
    dense_ff: int = FF,
) -> Path:
    """Kimi Linear (conversion/kimi_linear.py): Kimi delta attention (KDA) on three layers of
    four (0 KV heads), MLA on the fourth (one KV head, the latent cached as K); a dense first
    layer, then MoE with a shared expert."""
    d_conv = 4
    kv_lora, rope, nope, v_head = 64, 16, 32, 32
    n_exp = max(4, n_used)
    kv = [1 if (il + 1) % 4 == 0 else 0 for il in range(n_layer)]
    w = _start(path, "kimi-linear", {
        "block_count": n_layer, "embedding_length": E, "context_length": 1048576,
        "feed_forward_length": dense_ff, "attention.head_count": n_head,
        "attention.key_length": kv_lora + rope, "attention.key_length_mla": nope + rope,
        "attention.value_length_mla": v_head, "attention.kv_lora_rank": kv_lora,
        "rope.dimension_count": rope, "ssm.conv_kernel": d_conv, "kda.head_dim": kda,
        "expert_count": n_exp, "expert_used_count": n_used, "expert_feed_forward_length": ff_exp,
        "expert_shared_count": 1, "leading_dense_block_count": 1, "expert_gating_func": 2,
        "vocab_size": V,
    })  # fmt: skip
    w.add_array("kimi-linear.attention.head_count_kv", kv)
    _embeddings(w)
    width = kda * n_head
    for il in range(n_layer):
        p = f"blk.{il}."
        _tensor(w, p + "attn_norm.weight", E)
        if kv[il]:
            _tensors(w, p, [
                ("attn_kv_a_norm.weight", (kv_lora,)), ("attn_q.weight", (E, n_head * (nope + rope))),
                ("attn_kv_a_mqa.weight", (E, kv_lora + rope)),
                ("attn_k_b.weight", (nope, kv_lora, n_head)),
                ("attn_v_b.weight", (kv_lora, v_head, n_head)),
                ("attn_output.weight", (n_head * v_head, E)),
            ])  # fmt: skip
        else:
            _tensors(w, p, [
                ("ssm_conv1d_q.weight", (d_conv, 1, width)), ("ssm_conv1d_k.weight", (d_conv, 1, width)),
                ("ssm_conv1d_v.weight", (d_conv, 1, width)), ("attn_q.weight", (E, width)),
                ("attn_k.weight", (E, width)), ("attn_v.weight", (E, width)),
                ("ssm_f_a.weight", (E, kda)), ("ssm_f_b.weight", (kda, width)),
                ("ssm_beta.weight", (E, n_head)), ("ssm_a", (1, n_head)), ("ssm_dt.bias", (width,)),
                ("ssm_g_a.weight", (E, kda)), ("ssm_g_b.weight", (kda, width)),
                ("ssm_norm.weight", (kda,)), ("attn_output.weight", (width, E)),
            ])  # fmt: skip
        _tensor(w, p + "ffn_norm.weight", E)
        if il == 0:
            _tensors(w, p, _swiglu(dense_ff))
        else:
            _tensors(w, p, [*_experts(n_exp, ff_exp), ("ffn_gate_shexp.weight", (E, ff_exp)),
                            ("ffn_down_shexp.weight", (ff_exp, E)),
                            ("ffn_up_shexp.weight", (E, ff_exp)), ("exp_probs_b.bias", (n_exp,))])  # fmt: skip
    _finish(w)
    return path


BUILDERS: list[Callable[[Path], Path]] = [
    mamba, mamba2, rwkv6, rwkv7, jamba, falcon_h1, nemotron_h, granite_hybrid, lfm2,
    lfm2_window, plamo2, qwen3next, kimi_linear,
]  # fmt: skip

CPU = MachineSpec(kind="cpu", device_count=0, device_budget_bytes=0, device_overhead_bytes=0,
                  host_budget_bytes=2**34, cpu_threads=2)  # fmt: skip


def _log_until_reserved(path: Path, args: list[str], timeout_s: float = 60.0) -> str:
    """llama-server's log up to its graph reservation, the server then stopped: for a file
    that never becomes healthy (PLaMo 2 with a Mamba first layer: hparams.n_head() is layer
    0's, 0, so n_rot is 0, and ggml-cpu's rope spins forever on n_dims 0 in the first decode,
    common_context_can_seq_rm), every buffer is logged by then."""
    import subprocess
    import tempfile
    import time

    from _llama import free_port, llama_prefix, stop

    binary = llama_prefix() / "bin" / "llama-server"
    cmd = [str(binary), "-m", str(path), "--host", "127.0.0.1", "--port", str(free_port()),
           "-v", *args]  # fmt: skip
    with tempfile.TemporaryFile(mode="w+") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, text=True)
        try:
            t0 = time.monotonic()
            while time.monotonic() - t0 < timeout_s and proc.poll() is None:
                logf.seek(0)
                if "threadpool init" in logf.read():
                    break
                time.sleep(0.2)
        finally:
            stop(proc)
        logf.seek(0)
        out = logf.read()
    if "compute buffer size" not in out:
        raise RuntimeError(f"llama-server logged no compute buffer: {' '.join(cmd)}\n{out[-3000:]}")
    return out


def measure(
    build: Callable[[Path], Path], tmp: Path, ctx: int, slots: int, fa: bool
) -> dict[str, Any]:
    """(logged, plan) bytes of KV, RS, model weights and compute on the host."""
    from _llama import run_server

    path = build(tmp / f"{build.__name__}.gguf")
    args = ["-c", str(ctx), "-np", str(slots), "-fa", "on" if fa else "off", "--fit", "off",
            "-t", "2"]  # fmt: skip
    log = _log_until_reserved(path, args) if build is plamo2 else run_server(path, args).log
    logged = parse_buffers(log.split("loaded meta data")[-1])
    facts = facts_from_gguf(path)
    arch = facts.arch
    s = FitSettings(ctx=ctx, parallel=slots, flash_attention=fa)
    layers = range(arch.n_layer)
    return {
        "KV": (logged.get("host", "KV"), kv_bytes(arch, layers, s)),
        "RS": (logged.get("host", "RS"), recurrent_bytes(arch, layers, s)),
        "model": (
            logged.get("host", "model"),
            estimate_memory(facts, s, CPU).host.logged_weights_bytes,
        ),
        "compute": (logged.get("host", "compute"), compute_bytes(arch, s)),
        "arch": arch,
        "log": log,
    }


# What the plan must read off each file: which layers hold KV heads, which a recurrent state,
# which slide (llama.cpp's loaders decide it, src/models/<arch>.cpp).
_T, _F = True, False
LAYOUT: dict[str, dict[str, object]] = {
    "mamba": {"n_head_kv": [0] * 4, "recurrent_layers": [_T] * 4},
    "mamba2": {"n_head_kv": [0] * 4, "recurrent_layers": [_T] * 4},
    "rwkv6": {"n_head_kv": [0] * 4, "recurrent_layers": [_T] * 4},
    "rwkv7": {"n_head_kv": [0] * 4, "recurrent_layers": [_T] * 4},
    "jamba": {"n_head_kv": [0, 0, 2, 0, 0, 0, 2, 0], "recurrent_layers": [_T, _T, _F, _T] * 2},
    "falcon_h1": {"n_head_kv": [2] * 4, "recurrent_layers": [_T] * 4},
    "nemotron_h": {"n_head_kv": [0, 0, 0, 2] * 2, "recurrent_layers": [_T, _F] * 4},
    "granite_hybrid": {"n_head_kv": [0, 0, 0, 2] * 2, "recurrent_layers": [_T, _T, _T, _F] * 2},
    "lfm2": {"n_head_kv": [0, 0, 2] * 2, "recurrent_layers": [_T, _T, _F] * 2, "swa_layers": []},
    "lfm2_window": {
        "n_head_kv": [0, 0, 2] * 2,
        "recurrent_layers": [_T, _T, _F] * 2,
        "swa_layers": [_F, _F, _T] * 2,
        "sliding_window": 512,
    },
    "plamo2": {"n_head_kv": [0, 2] * 2, "recurrent_layers": [_T, _F] * 2},
    "qwen3next": {
        "n_head_kv": [0, 0, 0, 2, 0],
        "recurrent_layers": [_T, _T, _T, _F, _F],
        "nextn_layers": 1,
    },
    "kimi_linear": {"n_head_kv": [0, 0, 0, 1], "recurrent_layers": [_T, _T, _T, _F], "mla": True},
}

_MEASURED: dict[tuple[str, int, int, bool], dict[str, Any]] = {}


def _measured(
    factory: pytest.TempPathFactory, build: Callable[[Path], Path], ctx: int, slots: int, fa: bool
) -> dict[str, Any]:
    """One llama-server start per file and setting, shared by the tests below."""
    key = (build.__name__, ctx, slots, fa)
    if key not in _MEASURED:
        _MEASURED[key] = measure(build, factory.mktemp(build.__name__), ctx, slots, fa)
    return _MEASURED[key]


# A slot holds its own state, and the worst-case graph is reserved for every slot at once: the
# compute buffer of a scan grows with the slots (16 of them here), not with the context.
SETTINGS = [(8192, 2, True), (4096, 1, False), (8192, 16, True)]


@pytest.mark.parametrize("build", BUILDERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(("ctx", "slots", "fa"), SETTINGS)
def test_cache_state_and_weights_are_what_llama_server_allocates(
    tmp_path_factory: pytest.TempPathFactory,
    build: Callable[[Path], Path],
    ctx: int,
    slots: int,
    fa: bool,
) -> None:
    """KV cache and recurrent state to the log's 0.01 MiB, the host's weights to 0.02 MiB, and
    the layout the plan read off the file."""
    m = _measured(tmp_path_factory, build, ctx, slots, fa)
    kv, rs, model = m["KV"], m["RS"], m["model"]
    assert abs(kv[1] - kv[0]) <= 0.01 * MIB, f"KV logged {kv[0] / MIB:.2f} plan {kv[1] / MIB:.2f}"
    assert abs(rs[1] - rs[0]) <= 0.01 * MIB, f"RS logged {rs[0] / MIB:.2f} plan {rs[1] / MIB:.2f}"
    assert rs[0] > 0  # every one of these keeps a recurrent state
    assert (kv[0] > 0) == any(LAYOUT[build.__name__]["n_head_kv"])  # type: ignore[arg-type]
    assert abs(model[1] - model[0]) <= 0.02 * MIB, (
        f"weights logged {model[0] / MIB:.2f} plan {model[1] / MIB:.2f}"
    )
    arch = m["arch"]
    for field, want in LAYOUT[build.__name__].items():
        assert getattr(arch, field) == want, field


@pytest.mark.parametrize("build", BUILDERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(("ctx", "slots", "fa"), SETTINGS)
def test_compute_buffer_is_never_under_llama_servers(
    tmp_path_factory: pytest.TempPathFactory,
    build: Callable[[Path], Path],
    ctx: int,
    slots: int,
    fa: bool,
) -> None:
    """The plan's compute buffer is never under the logged one (how far over: the message)."""
    logged, plan = _measured(tmp_path_factory, build, ctx, slots, fa)["compute"]
    assert plan >= logged, (
        f"compute logged {logged / MIB:.2f} MiB, plan {plan / MIB:.2f} MiB "
        f"({(plan - logged) / MIB:+.2f})"
    )
