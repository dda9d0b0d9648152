"""The plan's KV cache, recurrent state, weights and compute buffer against a real llama-server,
on small real-shaped files of the architectures most people run that the small-file checks had
not covered: Qwen2 (biased Q/K/V), Qwen3 (Q/K norms) and Qwen3-MoE, Gemma 2 (every other layer
windowed, tied), OLMoE, Qwen3.5 MoE (gated delta nets and attention over routed and gated
shared experts, an MTP block; experts also as one fused gate-up stack, as newer conversions
write them), Nemotron 3 (Nemotron-H MoE: Mamba-2, attention and squared-ReLU MoE layers with
an expert bias, with and without the latent projection of its larger models, an MTP block),
GLM-5 (MLA beside a sparse-attention indexer cache on every layer, or on those GLM 5.2's table
marks), Command A-style Cohere 2 MoE (a window on three layers of four, a dense lead, an MTP
block) and Granite 4 Vision's text tower (Granite with windowed layers and attention sinks).

Weights are zeros; the buffers llama-server logs are the truth, and these tests assert it:
where the plan is wrong they fail."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from gguf import GGUFReader, GGUFWriter

from deployer.adapters.gguf_files import facts_from_gguf
from deployer.core.fit.memory import (
    FitSettings,
    compute_bytes,
    estimate_memory,
    kv_bytes,
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
    CPU,
    SETTINGS,
    _mib,
    _norms,
    _serve,
    measure,
)
from tests.integration.test_fit_arch_recurrent import _mamba2_mixer
from tests.integration.test_fit_architectures import FF, E, V, _start, _tensor

pytestmark = [pytest.mark.llama_server, pytest.mark.usefixtures("llama_server_prefix")]

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

Builder = Callable[..., Path]


def _mtp_head(w: GGUFWriter, p: str) -> None:
    """The tensors that make a block an MTP (nextn) block."""
    _put(w, p, (("nextn.eh_proj.weight", (2 * E, E)), ("nextn.enorm.weight", (E,)),
                ("nextn.hnorm.weight", (E,)), ("nextn.shared_head_norm.weight", (E,))))  # fmt: skip


# --- dense and MoE classics ------------------------------------------------------------------


def qwen2(path: Path, n_layer: int = 4) -> Path:
    """Qwen2/2.5 (src/models/qwen2.cpp): biased Q, K and V, an untied output."""
    w = _start(path, "qwen2", _keys(n_layer))
    _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _norms(w, p, "attn_norm", "ffn_norm")
        _qkv(w, p, bias=True)
        _dense_ffn(w, p)
    _finish(w)
    return path


def qwen3(path: Path, n_layer: int = 4) -> Path:
    """Qwen3 (src/models/qwen3.cpp): per-head Q and K norms, tied embeddings (the small ones)."""
    w = _start(path, "qwen3", _keys(n_layer))
    _output(w, tied=True)
    for il in range(n_layer):
        p = f"blk.{il}."
        _norms(w, p, "attn_norm", "ffn_norm")
        _norms(w, p, "attn_q_norm", "attn_k_norm", width=HEAD)
        _qkv(w, p)
        _dense_ffn(w, p)
    _finish(w)
    return path


def qwen3moe(path: Path, n_layer: int = 4) -> Path:
    """Qwen3-MoE (src/models/qwen3moe.cpp): Q/K norms, every block routed experts, no shared
    expert."""
    w = _start(path, "qwen3moe", _keys(
        n_layer, **{"expert_feed_forward_length": FF_EXP, "expert_count": N_EXP,
                    "expert_used_count": N_USED}))  # fmt: skip
    _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _norms(w, p, "attn_norm", "ffn_norm")
        _norms(w, p, "attn_q_norm", "attn_k_norm", width=HEAD)
        _qkv(w, p)
        _experts(w, p, FF_EXP, q4=False)
    _finish(w)
    return path


def gemma2(path: Path, n_layer: int = 4) -> Path:
    """Gemma 2 (src/models/gemma2.cpp): every other layer windowed (the first one), soft caps,
    norms after attention and feed-forward, the output tied to token_embd (always)."""
    w = _start(path, "gemma2", _keys(n_layer, **{"attention.sliding_window": 512}))
    w.add_float32("gemma2.attn_logit_softcapping", 50.0)
    w.add_float32("gemma2.final_logit_softcapping", 30.0)
    _output(w, tied=True)
    for il in range(n_layer):
        p = f"blk.{il}."
        _norms(w, p, "attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm")
        _qkv(w, p)
        _dense_ffn(w, p)
    _finish(w)
    return path


def olmoe(path: Path, n_layer: int = 4) -> Path:
    """OLMoE (src/models/olmoe.cpp): Q and K norms over the whole projection (n_embd wide),
    routed experts feed_forward_length wide."""
    w = _start(path, "olmoe", _keys(
        n_layer, **{"feed_forward_length": FF_EXP, "expert_count": N_EXP,
                    "expert_used_count": N_USED, "attention.head_count_kv": N_HEAD}))  # fmt: skip
    _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _norms(w, p, "attn_norm", "ffn_norm", "attn_q_norm", "attn_k_norm")
        _qkv(w, p, n_kv=N_HEAD)
        _experts(w, p, FF_EXP, q4=False)
    _finish(w)
    return path


# --- the new generation ----------------------------------------------------------------------


def qwen35moe(path: Path, n_layer: int = 8, nextn: int = 1, *, fused: bool = False) -> Path:
    """Qwen3.5 MoE (src/models/qwen35moe.cpp): every 4th layer gated attention (Q twice as
    wide, Q/K norms), the rest gated delta nets; every layer routed experts beside a shared
    expert behind a sigmoid gate (a 1-D ffn_gate_inp_shexp); the last block an MTP block,
    skipped. `fused`: the experts' gate and up as one ffn_gate_up_exps stack."""
    d_conv, d_state, n_group, dt_rank = 4, 32, 2, 4
    key_dim, value_dim = d_state * n_group, d_state * dt_rank
    n_all = n_layer + nextn
    w = _start(path, "qwen35moe", _keys(
        n_all, **{"expert_feed_forward_length": FF_EXP,
                  "expert_shared_feed_forward_length": FF, "expert_count": N_EXP,
                  "expert_used_count": N_USED, "nextn_predict_layers": nextn,
                  "ssm.conv_kernel": d_conv, "ssm.inner_size": value_dim,
                  "ssm.state_size": d_state, "ssm.group_count": n_group,
                  "ssm.time_step_rank": dt_rank}))  # fmt: skip
    w.add_array("qwen35moe.rope.dimension_sections", [11, 11, 10, 0])
    _output(w)
    for il in range(n_all):
        p = f"blk.{il}."
        _norms(w, p, "attn_norm", "post_attention_norm")
        if il >= n_layer or (il + 1) % 4 == 0:
            _put(w, p, (("attn_q.weight", (E, HEAD * N_HEAD * 2)),
                        ("attn_k.weight", (E, HEAD * N_KV)), ("attn_v.weight", (E, HEAD * N_KV)),
                        ("attn_output.weight", (HEAD * N_HEAD, E))))  # fmt: skip
            _norms(w, p, "attn_q_norm", "attn_k_norm", width=HEAD)
        else:
            _put(w, p, (("attn_qkv.weight", (E, 2 * key_dim + value_dim)),
                        ("attn_gate.weight", (E, value_dim)),
                        ("ssm_conv1d.weight", (d_conv, 2 * key_dim + value_dim)),
                        ("ssm_dt.bias", (dt_rank,)), ("ssm_a", (dt_rank,)),
                        ("ssm_beta.weight", (E, dt_rank)), ("ssm_alpha.weight", (E, dt_rank)),
                        ("ssm_norm.weight", (d_state,)),
                        ("ssm_out.weight", (value_dim, E))))  # fmt: skip
        _tensor(w, p + "ffn_gate_inp.weight", E, N_EXP)
        _tensor(w, p + "ffn_down_exps.weight", FF_EXP, E, N_EXP)
        if fused:
            _tensor(w, p + "ffn_gate_up_exps.weight", E, 2 * FF_EXP, N_EXP)
        else:
            _tensor(w, p + "ffn_gate_exps.weight", E, FF_EXP, N_EXP)
            _tensor(w, p + "ffn_up_exps.weight", E, FF_EXP, N_EXP)
        _put(w, p, (("ffn_gate_inp_shexp.weight", (E,)), ("ffn_gate_shexp.weight", (E, FF)),
                    ("ffn_up_shexp.weight", (E, FF)), ("ffn_down_shexp.weight", (FF, E))))  # fmt: skip
        if il >= n_layer:
            _mtp_head(w, p)
    _finish(w)
    return path


def qwen35moe_fused(path: Path) -> Path:
    return qwen35moe(path, fused=True)


def _nemotron_h_moe(path: Path, pattern: str, latent: int, nextn: int) -> Path:
    """Nemotron 3 (Nemotron-H MoE; src/models/nemotron-h.cpp loads it): a pattern of Mamba-2
    (M), attention (*) and MoE (E) layers, head_count_kv and feed_forward_length per layer
    (a layer with neither is a Mamba layer); the MoE layers' experts are squared-ReLU up and
    down only, with an expert bias and a shared expert, optionally working in a `latent`
    width (moe_latent_size: Nemotron 3 Super); appended MTP blocks attend and route."""
    n_head, n_kv, head = 4, 2, 64
    d_conv, d_inner, d_state, n_group, n_heads = 4, 2 * E, 32, 2, 8
    kinds = pattern + "T" * nextn
    moe_e = latent or E
    w = _start(path, "nemotron_h_moe", {
        "block_count": len(kinds), "embedding_length": E, "context_length": 8192,
        "attention.head_count": n_head, "attention.key_length": head,
        "attention.value_length": head, "ssm.conv_kernel": d_conv, "ssm.inner_size": d_inner,
        "ssm.state_size": d_state, "ssm.time_step_rank": n_heads, "ssm.group_count": n_group,
        "expert_count": N_EXP, "expert_used_count": N_USED,
        "expert_feed_forward_length": FF_EXP, "expert_shared_feed_forward_length": FF,
        "nextn_predict_layers": nextn,
    } | ({"moe_latent_size": latent} if latent else {}))  # fmt: skip
    w.add_array("nemotron_h_moe.attention.head_count_kv", [n_kv if c in "*T" else 0 for c in kinds])
    w.add_array("nemotron_h_moe.feed_forward_length", [FF if c in "ET" else 0 for c in kinds])
    w.add_float32("nemotron_h_moe.attention.layer_norm_epsilon", 1e-5)
    w.add_float32("nemotron_h_moe.expert_weights_scale", 2.5)
    w.add_bool("nemotron_h_moe.expert_weights_norm", True)
    _output(w)
    for il, kind in enumerate(kinds):
        p = f"blk.{il}."
        _tensor(w, p + "attn_norm.weight", E)
        if kind == "M":
            for name, shape in _mamba2_mixer(d_conv, d_inner, d_state, n_group, n_heads):
                _tensor(w, p + name, *shape)
            continue
        if kind in "*T":
            _qkv(w, p, n_head, n_kv, head)
        if kind in "ET":
            _put(w, p, (("ffn_gate_inp.weight", (E, N_EXP)), ("exp_probs_b.bias", (N_EXP,)),
                        ("ffn_down_exps.weight", (FF_EXP, moe_e, N_EXP)),
                        ("ffn_up_exps.weight", (moe_e, FF_EXP, N_EXP)),
                        ("ffn_down_shexp.weight", (FF, E)), ("ffn_up_shexp.weight", (E, FF))))  # fmt: skip
            if latent:
                _put(w, p, (("ffn_latent_down.weight", (E, latent)),
                            ("ffn_latent_up.weight", (latent, E))))  # fmt: skip
        if kind == "T":
            _tensor(w, p + "post_attention_norm.weight", E)
            _mtp_head(w, p)
    _finish(w)
    return path


def nemotron_h_moe(path: Path) -> Path:
    return _nemotron_h_moe(path, "ME*EME*E", 0, 0)


def nemotron_h_moe_latent(path: Path) -> Path:
    return _nemotron_h_moe(path, "ME*EME*E", 128, 1)


def _glm_dsa(path: Path, n_layer: int, nextn: int, types: list[int] | None,
             ctx_train: int) -> Path:  # fmt: skip
    """GLM-5 (src/models/glm-dsa.cpp): DeepSeek 3.2's MLA and lightning indexer, whose keys are
    cached on the layers attention.indexer.types marks (all of them before GLM 5.2, whose
    files train to 1M tokens and default to its own table); a dense lead, then routed
    experts beside a shared one and an expert bias; the last block an MTP block, skipped but
    for its expert bias (created without the skip flag)."""
    n_head, q_lora, kv_lora, rope, nope, v_head = 4, 64, 64, 16, 32, 32
    idx_heads, idx_head = 4, 64
    n_all = n_layer + nextn
    w = _start(path, "glm-dsa", {
        "block_count": n_all, "embedding_length": E, "context_length": ctx_train,
        "feed_forward_length": FF, "attention.head_count": n_head,
        "attention.head_count_kv": 1, "attention.key_length": kv_lora + rope,
        "attention.value_length": kv_lora, "attention.key_length_mla": nope + rope,
        "attention.value_length_mla": v_head, "attention.q_lora_rank": q_lora,
        "attention.kv_lora_rank": kv_lora, "rope.dimension_count": rope,
        "expert_feed_forward_length": FF_EXP, "expert_shared_count": 1,
        "leading_dense_block_count": 1, "expert_count": N_EXP, "expert_used_count": N_USED,
        "attention.indexer.head_count": idx_heads, "attention.indexer.key_length": idx_head,
        "attention.indexer.top_k": 64, "nextn_predict_layers": nextn, "vocab_size": V,
        "expert_gating_func": 2,
    })  # fmt: skip
    if types is not None:
        w.add_array("glm-dsa.attention.indexer.types", types)
    _output(w)
    for il in range(n_all):
        p = f"blk.{il}."
        _put(w, p, (("attn_norm.weight", (E,)), ("attn_q_a_norm.weight", (q_lora,)),
                    ("attn_kv_a_norm.weight", (kv_lora,)), ("attn_q_a.weight", (E, q_lora)),
                    ("attn_q_b.weight", (q_lora, n_head * (nope + rope))),
                    ("attn_kv_a_mqa.weight", (E, kv_lora + rope)),
                    ("attn_k_b.weight", (nope, kv_lora, n_head)),
                    ("attn_v_b.weight", (kv_lora, v_head, n_head)),
                    ("attn_output.weight", (n_head * v_head, E)), ("ffn_norm.weight", (E,)),
                    ("indexer.k_norm.weight", (idx_head,)), ("indexer.k_norm.bias", (idx_head,)),
                    ("indexer.proj.weight", (E, idx_heads)),
                    ("indexer.attn_k.weight", (E, idx_head)),
                    ("indexer.attn_q_b.weight", (q_lora, idx_heads * idx_head))))  # fmt: skip
        if il == 0:
            _dense_ffn(w, p)
        else:
            _experts(w, p, FF_EXP, q4=False, shared=FF_EXP, bias=True)
        if il >= n_layer:
            _mtp_head(w, p)
    _finish(w)
    return path


def glm_dsa(path: Path) -> Path:
    return _glm_dsa(path, 4, 1, None, 202752)


def glm_dsa_table(path: Path) -> Path:
    """GLM 5.2: a 1M-token file with its own table (indexer keys on layers 0, 1 and 4)."""
    return _glm_dsa(path, 6, 0, [1, 1, 0, 0, 1, 0], 1048576)


def cohere2moe(path: Path, n_layer: int = 5, nextn: int = 1, *, copies: bool = False) -> Path:
    """Cohere 2 MoE (src/models/cohere2moe.cpp): a 512-token window on three layers of four
    (the pattern's dense-first form: the first of each four attends in full), a dense lead,
    routed experts beside a shared one; the last block an MTP block, whose head norm loads
    (created without the skip flag), and with `copies` its own embedding and head copies,
    which load too."""
    n_all = n_layer + nextn
    w = _start(path, "cohere2moe", _keys(
        n_all, **{"expert_feed_forward_length": FF_EXP, "expert_shared_count": 1,
                  "expert_count": N_EXP, "expert_used_count": N_USED,
                  "leading_dense_block_count": 1, "attention.sliding_window": 512,
                  "nextn_predict_layers": nextn}))  # fmt: skip
    w.add_float32("cohere2moe.logit_scale", 0.25)
    _output(w, tied=True)
    for il in range(n_all):
        p = f"blk.{il}."
        _norms(w, p, "attn_norm")
        _qkv(w, p)
        if il == 0:
            _dense_ffn(w, p)
        else:
            _experts(w, p, FF_EXP, q4=False, shared=FF_EXP)
        if il >= n_layer:
            _mtp_head(w, p)
            if copies:
                _put(w, p, (("nextn.embed_tokens.weight", (E, V)),
                            ("nextn.shared_head_head.weight", (E, V))))  # fmt: skip
    _finish(w)
    return path


def cohere2moe_copies(path: Path) -> Path:
    return cohere2moe(path, copies=True)


def granite_swa(path: Path, n_layer: int = 4) -> Path:
    """Granite 4 Vision's text tower (src/models/granite-swa.cpp): Granite's scales, a window on
    the layers sliding_window_pattern marks, attention sinks on every layer, tied."""
    w = _start(path, "granite_swa", _keys(n_layer, **{"attention.sliding_window": 512,
                                                       "vocab_size": V}))  # fmt: skip
    for key, value in (("logit_scale", 8.0), ("residual_scale", 0.22),
                       ("embedding_scale", 12.0), ("attention.scale", 0.015625)):  # fmt: skip
        w.add_float32(f"granite_swa.{key}", value)
    w.add_array("granite_swa.attention.sliding_window_pattern", [True, True, True, False])
    _output(w, tied=True)
    for il in range(n_layer):
        p = f"blk.{il}."
        _norms(w, p, "attn_norm", "ffn_norm")
        _qkv(w, p)
        _tensor(w, p + "attn_sinks.weight", N_HEAD)
        _dense_ffn(w, p)
    _finish(w)
    return path


BUILDERS: list[Builder] = [
    qwen2, qwen3, qwen3moe, gemma2, olmoe, qwen35moe, qwen35moe_fused, nemotron_h_moe,
    nemotron_h_moe_latent, glm_dsa, glm_dsa_table, cohere2moe, granite_swa,
]  # fmt: skip

# the mapping's span covers skipped MTP tensors (test_cache_state_and_weights_...)
SPAN_KNOWN: list[Builder] = [glm_dsa, cohere2moe]


@pytest.mark.parametrize("build", BUILDERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(("ctx", "slots", "fa"), SETTINGS)
def test_cache_state_and_weights_are_what_llama_server_allocates(
    tmp_path_factory: pytest.TempPathFactory, build: Builder, ctx: int, slots: int, fa: bool
) -> None:
    """KV cache and recurrent state to the log's 0.01 MiB, the host's weights to 0.02 MiB.

    Known, the logged figure only: GLM-5's and Cohere 2 MoE's MTP blocks load a tensor or two
    after skipped ones, so the mapping's span (CPU_Mapped, first to last mapped tensor)
    covers skipped tensors, which the plan, summing tensors, leaves out; what is resident is
    not affected (test_an_mtp_block_read_into_memory checks the loaded buffers)."""
    m = measure(tmp_path_factory, build, ctx, slots, fa)
    kv, rs, weights = m["KV"], m["RS"], m["weights"]
    assert abs(kv[1] - kv[0]) <= 0.01 * MIB, f"KV {_mib(kv)}"
    assert abs(rs[1] - rs[0]) <= 0.01 * MIB, f"RS {_mib(rs)}"
    if build in SPAN_KNOWN:
        # the gap is skipped MTP tensors, no more than the block holds
        path = build(tmp_path_factory.mktemp("mtp") / "m.gguf")
        last = f"blk.{facts_from_gguf(path).arch.n_layer - 1}."
        mtp = sum(int(t.n_bytes) for t in GGUFReader(path).tensors if t.name.startswith(last))
        gap = weights[0] - weights[1]
        assert 0 < gap <= mtp, f"weights {_mib(weights)}, MTP block {mtp} B"
        return
    assert abs(weights[1] - weights[0]) <= 0.02 * MIB, f"weights {_mib(weights)}"


@pytest.mark.parametrize("build", BUILDERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(("ctx", "slots", "fa"), SETTINGS)
def test_compute_buffer_is_never_under_llama_servers(
    tmp_path_factory: pytest.TempPathFactory, build: Builder, ctx: int, slots: int, fa: bool
) -> None:
    """The plan's compute buffer is never under the logged one: the sparse-attention graphs'
    per-layer zeros (GLM 5.2's six layers 0.37 MiB under without them) and, without flash
    attention, MLA's transposed copy of V."""
    logged, plan = measure(tmp_path_factory, build, ctx, slots, fa)["compute"]
    assert plan >= logged, f"compute {_mib((logged, plan))} ({(plan - logged) / MIB:+.2f})"


_T, _F = True, False
# What the plan must read off each file, as llama.cpp's loaders set it
LAYOUT: dict[str, dict[str, object]] = {
    "gemma2": {"swa_layers": [_T, _F, _T, _F], "sliding_window": 512},
    "qwen35moe": {"recurrent_layers": [_T, _T, _T, _F] * 2 + [_F], "nextn_layers": 1},
    "nemotron_h_moe": {"recurrent_layers": [_T, _F, _F, _F] * 2,
                       "n_head_kv": [0, 0, 2, 0] * 2},
    "cohere2moe": {"swa_layers": [_F, _T, _T, _T, _F, _F], "sliding_window": 512,
                   "nextn_layers": 1},
    "granite_swa": {"swa_layers": [_T, _T, _T, _F], "sliding_window": 512},
    "glm_dsa": {"mla": True, "nextn_layers": 1},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(LAYOUT))
def test_the_plan_reads_the_layout_llama_cpp_loads(tmp_path: Path, name: str) -> None:
    """What the plan reads off each file is what llama.cpp's loader sets."""
    arch = facts_from_gguf(globals()[name](tmp_path / "m.gguf")).arch
    for field, want in LAYOUT[name].items():
        assert getattr(arch, field) == want, field


@pytest.mark.parametrize(
    "build",
    [glm_dsa, cohere2moe, cohere2moe_copies, qwen35moe, nemotron_h_moe_latent],
    ids=lambda f: f.__name__,
)
def test_an_mtp_block_read_into_memory(tmp_path: Path, build: Builder) -> None:
    """Read into memory (-lm none) a skipped MTP block takes no buffer but for what its loader
    creates without the skip flag: GLM-5's expert bias, Cohere 2 MoE's head norm (and its
    embedding and head copies where a file has them; the plan had counted its block whole,
    3.1 MiB over here)."""
    path = build(tmp_path / "m.gguf")
    logged, _ = _serve(path, 4096, 1, True, "none")
    facts = facts_from_gguf(path)
    s = FitSettings(ctx=4096, load_mode="none")
    assert kv_bytes(facts.arch, [facts.arch.n_layer - 1], s) == 0
    plan = estimate_memory(facts, s, CPU).host.logged_weights_bytes
    got = logged.get("host", "model")
    assert abs(plan - got) <= 0.02 * MIB, f"weights {_mib((got, plan))}"


@pytest.mark.parametrize("arch", ["glm-dsa", "deepseek32"])
@pytest.mark.parametrize(("ctx", "fa"), [(16384, False), (16384, True), (32768, False)])
def test_sparse_attention_compute_grows_with_layers_and_context(
    tmp_path: Path, arch: str, ctx: int, fa: bool
) -> None:
    """Sixteen layers of sparse attention: every layer's zero-filled top-k tensor is placed
    when the graph starts (1.5 MiB under at top-k 64 before it was counted; 4 MiB a layer at
    the real models' top-k 2048), and without flash attention the MLA cache's V is copied
    transposed (f16, a row per cell: 3.4 MiB under at ctx 32768 before). At most 3 MiB over."""
    from tests.integration.test_fit_architectures import _deepseek

    if arch == "glm-dsa":
        path = _glm_dsa(tmp_path / "m.gguf", 16, 0, None, 202752)
    else:
        path = _deepseek(tmp_path / "m.gguf", "deepseek32", mla=True, n_layer=16)
    logged = _serve(path, ctx, 1, fa)[0].get("host", "compute")
    plan = compute_bytes(facts_from_gguf(path).arch, FitSettings(ctx=ctx, flash_attention=fa))
    assert logged <= plan <= logged + 3 * MIB, _mib((logged, plan))
