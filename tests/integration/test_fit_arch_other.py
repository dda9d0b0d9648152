"""The plan's KV cache, recurrent state, weights and compute buffer against a real llama-server,
on small real-shaped files of the remaining architectures the fit had not been checked on:
MiniCPM 1/2, PLaMo (a parallel block on one norm), PLaMo 3 (a window on seven layers of eight,
post-norms, a fused gate|up), Jais-2 (LayerNorms with biases, a plain MLP), Chameleon (Q/K norms
per head, image logits masked: a vocabulary past 8196), RWKV6-Qwen2 and ARWKV-7 (RWKV time mix
in front of a Qwen2 SwiGLU: one token-shift row, K/V narrower than the embedding), Mellum (MoE,
a window on three layers of four), Nanbeige (and its looped form: num_loops passes over the same
blocks, each with its own cache), Maincoder, Qwen 1 (a fused biased QKV, feed_forward_length
twice the MLP), HRM-Text (alternating low and high stacks, block_count the expanded cache-slot
count, later passes aliasing the first ones' weights), Talkie (weightless norms, a per-head Q
gain, a scalar per layer), Spark 2.5 (the file's window pattern, a per-head output gate), Maple
(MoE, the file's window pattern), Muse Glimmer (a window on three layers of four, gated
attention), PaddleOCR-VL's and DeepSeek-OCR's text towers (M-RoPE ERNIE 4.5 blocks; DeepSeek 2
blocks without MLA: full K and V heads).

Mended: Nanbeige's loops (the plan had counted block_count layers of cache: half of it),
Talkie's and HRM-Text's carried row (0.2-0.5 MiB under), Chameleon's image-logit mask (a graph
leaf, 0.02 MiB under). CLEF (a decision model: Qwen3.5's trunk with no memory at all, a joint
decision head) is served only on llama-server's /v1/systemone with its file's own template:
deployer refuses it. Not covered: GPT-J (llama.cpp names the architecture but has no loader for
it: llama_model_mapping returns nothing).

Weights are zeros; the buffers llama-server logs are the truth, and these tests assert it: where
the plan is wrong they fail."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from gguf import GGUFWriter

from deployer.adapters.gguf_files import facts_from_gguf
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
    measure,
)
from tests.integration.test_fit_architectures import FF, E, V, _start, _tensor

pytestmark = [pytest.mark.llama_server, pytest.mark.usefixtures("llama_server_prefix")]

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

Builder = Callable[..., Path]


# --- dense -------------------------------------------------------------------------------------


def minicpm(path: Path, n_layer: int = 3) -> Path:
    """MiniCPM 1/2 (src/models/minicpm.cpp): Llama blocks under the Granite-style scales
    (embedding, residual, logit: defaults when the file has none), tied embeddings."""
    w = _start(path, "minicpm", _keys(n_layer))
    _output(w, tied=True)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p)
        _norms(w, p, "attn_norm", "ffn_norm")
        _dense_ffn(w, p)
    _finish(w)
    return path


def plamo(path: Path, n_layer: int = 3) -> Path:
    """PLaMo (src/models/plamo.cpp): attention and the MLP side by side on one norm (no
    ffn_norm), an untied output."""
    w = _start(path, "plamo", _keys(n_layer))
    _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p)
        _norms(w, p, "attn_norm")
        _dense_ffn(w, p)
    _finish(w)
    return path


def plamo3(path: Path, n_layer: int = 8) -> Path:
    """PLaMo 3 (src/models/plamo3.cpp): a fused QKV, Q/K norms, post-attention and post-MLP
    norms (named without .weight), a fused gate|up; a 512-token window on the layers
    load_swa_pattern(8) marks (seven of eight), tied."""
    w = _start(path, "plamo3", _keys(n_layer, **{"attention.sliding_window": 512}))
    _output(w, tied=True)
    for il in range(n_layer):
        p = f"blk.{il}."
        _put(w, p, (("attn_qkv.weight", (E, (N_HEAD + 2 * N_KV) * HEAD)),
                    ("attn_output.weight", (N_HEAD * HEAD, E)),
                    ("ffn_up.weight", (E, 2 * FF)), ("ffn_down.weight", (FF, E))))  # fmt: skip
        _norms(w, p, "attn_norm", "ffn_norm")
        _norms(w, p, "attn_q_norm", "attn_k_norm", width=HEAD)
        _norms(w, p, "post_attention_norm", "post_ffw_norm", suffix="")
    _finish(w)
    return path


def jais2(path: Path, n_layer: int = 3) -> Path:
    """Jais-2 (src/models/jais2.cpp): LayerNorms with biases, a biased output projection, a
    plain (ungated) MLP with biases, rope."""
    w = _start(path, "jais2", _keys(n_layer))
    w.add_float32("jais2.attention.layer_norm_epsilon", 1e-5)
    _output(w)
    _tensor(w, "output_norm.bias", E)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p)
        _norms(w, p, "attn_norm", "ffn_norm")
        _norms(w, p, "attn_norm", "ffn_norm", "attn_output", suffix=".bias")
        _put(w, p, (("ffn_up.weight", (E, FF)), ("ffn_up.bias", (FF,)),
                    ("ffn_down.weight", (FF, E)), ("ffn_down.bias", (E,))))  # fmt: skip
    _finish(w)
    return path


CHAMELEON_VOCAB = 8320  # its graph masks the image tokens' logits, ids 4..8195


def _start_vocab(path: Path, arch: str, keys: dict[str, int], n_vocab: int) -> GGUFWriter:
    """_start with a vocabulary of n_vocab tokens."""
    w = GGUFWriter(path, arch)
    for k, v in keys.items():
        w.add_uint32(f"{arch}.{k}", v)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_float32(f"{arch}.rope.freq_base", 1e6)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"t{i}" for i in range(n_vocab - len(tokens))]
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (n_vocab - 259))
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    return w


def chameleon(path: Path, n_layer: int = 3) -> Path:
    """Chameleon's text model (src/models/chameleon.cpp): Q/K norms per head (2-D, a row per
    head), an untied output whose logits for the image tokens (ids 4..8195) the graph sets to
    -inf: the vocabulary must reach past them (8320 here)."""
    w = _start_vocab(path, "chameleon", _keys(n_layer), CHAMELEON_VOCAB)
    _tensor(w, "token_embd.weight", E, CHAMELEON_VOCAB)
    _tensor(w, "output_norm.weight", E)
    _tensor(w, "output.weight", E, CHAMELEON_VOCAB)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p)
        _norms(w, p, "attn_norm", "ffn_norm")
        _put(w, p, (("attn_q_norm.weight", (HEAD, N_HEAD)), ("attn_k_norm.weight", (HEAD, N_KV))))
        _dense_ffn(w, p)
    _finish(w)
    return path


def mellum(path: Path, n_layer: int = 4) -> Path:
    """Mellum (src/models/mellum.cpp): Q/K norms, every block MoE (expert_feed_forward_length
    wide experts, no shared one), a 512-token window on the layers load_swa_pattern(4) marks."""
    w = _start(path, "mellum", _keys(
        n_layer, **{"expert_feed_forward_length": FF_EXP, "expert_count": N_EXP,
                    "expert_used_count": N_USED, "attention.sliding_window": 512}))  # fmt: skip
    _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p)
        _norms(w, p, "attn_norm", "ffn_norm")
        _norms(w, p, "attn_q_norm", "attn_k_norm", width=HEAD)
        _experts(w, p, FF_EXP, q4=False)
    _finish(w)
    return path


def _nanbeige(path: Path, n_layer: int, loops: int) -> Path:
    """Nanbeige (src/models/nanbeige.cpp): Llama blocks; with num_loops > 1 the loader expands
    the layers to block_count x num_loops logical ones sharing the physical blocks' weights,
    each with its own KV cache (n_layer_all is the expanded count)."""
    w = _start(path, "nanbeige", _keys(n_layer))
    if loops > 1:
        w.add_uint32("nanbeige.num_loops", loops)
    _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p)
        _norms(w, p, "attn_norm", "ffn_norm")
        _dense_ffn(w, p)
    _finish(w)
    return path


def nanbeige(path: Path) -> Path:
    return _nanbeige(path, 3, 1)


def nanbeige_looped(path: Path) -> Path:
    """Nanbeige with num_loops 2: 3 blocks in the file, 6 KV-cached layers."""
    return _nanbeige(path, 3, 2)


def maincoder(path: Path, n_layer: int = 3) -> Path:
    """Maincoder (src/models/maincoder.cpp): Llama blocks with Q/K norms, tied."""
    w = _start(path, "maincoder", _keys(n_layer))
    _output(w, tied=True)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p)
        _norms(w, p, "attn_norm", "ffn_norm")
        _norms(w, p, "attn_q_norm", "attn_k_norm", width=HEAD)
        _dense_ffn(w, p)
    _finish(w)
    return path


def qwen(path: Path, n_layer: int = 3) -> Path:
    """Qwen 1 (src/models/qwen.cpp): a fused, biased QKV of three n_embd (MHA: K and V heads as
    many as Q), the MLP half of feed_forward_length wide, an untied output."""
    w = _start(path, "qwen", _keys(n_layer, **{"attention.head_count_kv": N_HEAD,
                                               "feed_forward_length": 2 * FF}))  # fmt: skip
    _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _put(w, p, (("attn_qkv.weight", (E, 3 * E)), ("attn_qkv.bias", (3 * E,)),
                    ("attn_output.weight", (E, E))))  # fmt: skip
        _norms(w, p, "attn_norm", "ffn_norm")
        _dense_ffn(w, p)
    _finish(w)
    return path


def hrm_text(path: Path, per_stack: int = 2, h_cycles: int = 2, l_cycles: int = 1) -> Path:
    """HRM-Text (src/models/hrm-text.cpp): a low and a high stack of per_stack blocks (blk 0..
    2 per_stack - 1) run h_cycles x (l_cycles + 1) times; block_count is the expanded cache-slot
    count (8 here), every slot with its own KV cache, later passes aliasing the first ones'
    weights. No norm weights; a sigmoid attention gate; hrm.z_l_init seeds the low state."""
    n_slot = per_stack * h_cycles * (l_cycles + 1)
    w = _start(path, "hrm_text", _keys(n_slot, **{"hrm.layers_per_stack": per_stack,
                                                  "hrm.h_cycles": h_cycles,
                                                  "hrm.l_cycles": l_cycles}))  # fmt: skip
    _tensor(w, "token_embd.weight", E, V)
    _tensor(w, "output.weight", E, V)
    _tensor(w, "hrm.z_l_init", E)
    for il in range(2 * per_stack):
        p = f"blk.{il}."
        _qkv(w, p)
        _tensor(w, p + "attn_gate.weight", E, N_HEAD * HEAD)
        _dense_ffn(w, p)
    _finish(w)
    return path


def talkie(path: Path, n_layer: int = 3) -> Path:
    """Talkie (src/models/talkie.cpp): weightless RMS norms (no norm tensors at all), a gain per
    Q head (attn_q_norm 1 x n_head), a scalar output scale per layer, logit_scale required."""
    w = _start(path, "talkie", _keys(n_layer))
    w.add_float32("talkie.logit_scale", 1.0)
    _tensor(w, "token_embd.weight", E, V)
    _tensor(w, "output.weight", E, V)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p)
        _put(w, p, (("attn_q_norm.weight", (1, N_HEAD)), ("layer_output_scale.weight", (1,))))
        _dense_ffn(w, p)
    _finish(w)
    return path


SPARK_SWA = [True, True, True, False]


def spark2_5(path: Path, n_layer: int = 4) -> Path:
    """Spark 2.5 (src/models/spark2-5.cpp): the window pattern read from the file (required
    array), a 512-token window, a per-head sigmoid output gate (attn_gate n_embd x n_head),
    tied."""
    w = _start(path, "spark2_5", _keys(n_layer, **{"attention.sliding_window": 512}))
    w.add_array("spark2_5.attention.sliding_window_pattern", SPARK_SWA[:n_layer])
    _output(w, tied=True)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p)
        _tensor(w, p + "attn_gate.weight", E, N_HEAD)
        _norms(w, p, "attn_norm", "ffn_norm")
        _dense_ffn(w, p)
    _finish(w)
    return path


MAPLE_SWA = [True, False, True, False]


def maple(path: Path, n_layer: int = 4) -> Path:
    """Maple (src/models/maple.cpp): the window pattern read from the file (required array), a
    512-token window, Q/K norms, every block MoE with a SwiGLU clamp, an untied output."""
    w = _start(path, "maple", _keys(
        n_layer, **{"expert_feed_forward_length": FF_EXP, "expert_count": N_EXP,
                    "expert_used_count": N_USED, "attention.sliding_window": 512}))  # fmt: skip
    w.add_array("maple.attention.sliding_window_pattern", MAPLE_SWA[:n_layer])
    w.add_float32("maple.swiglu_clamp_exp", 7.0)
    _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p)
        _norms(w, p, "attn_norm", "ffn_norm")
        _norms(w, p, "attn_q_norm", "attn_k_norm", width=HEAD)
        _experts(w, p, FF_EXP, q4=False)
    _finish(w)
    return path


def muse_glimmer(path: Path, n_layer: int = 4) -> Path:
    """Muse Glimmer (src/models/muse-glimmer.cpp): a 512-token window on the layers
    load_swa_pattern(4) marks (rope there, none on the full layers), pre- and post-norms, Q/K
    norms, a sigmoid output gate as wide as Q, logit_scale required, untied."""
    w = _start(path, "muse-glimmer", _keys(n_layer, **{"attention.sliding_window": 512}))
    w.add_float32("muse-glimmer.logit_scale", 1.0)
    _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p)
        _tensor(w, p + "attn_gate.weight", E, N_HEAD * HEAD)
        _norms(w, p, "attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm")
        _norms(w, p, "attn_q_norm", "attn_k_norm", width=HEAD)
        _dense_ffn(w, p)
    _finish(w)
    return path


def paddleocr(path: Path, n_layer: int = 3) -> Path:
    """PaddleOCR-VL's text model (src/models/paddleocr.cpp: ERNIE 4.5's loader, Qwen2-VL's
    M-RoPE graph with optional biases), tied."""
    w = _start(path, "paddleocr", _keys(n_layer))
    w.add_array("paddleocr.rope.dimension_sections", [8, 12, 12, 0])
    _output(w, tied=True)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p)
        _norms(w, p, "attn_norm", "ffn_norm")
        _dense_ffn(w, p)
    _finish(w)
    return path


def deepseek2_ocr(path: Path, n_layer: int = 3) -> Path:
    """DeepSeek-OCR's text model (src/models/deepseek2ocr.cpp, DeepSeek 2's graph): no MLA, K
    and V as wide as the embedding (every head cached), a leading dense block, then MoE with
    expert_shared_count shared experts."""
    w = _start(path, "deepseek2-ocr", _keys(
        n_layer, **{"attention.head_count_kv": N_HEAD, "expert_feed_forward_length": FF_EXP,
                    "expert_shared_count": 1, "leading_dense_block_count": 1,
                    "expert_count": N_EXP, "expert_used_count": N_USED}))  # fmt: skip
    # its graph asserts DeepSeek-OCR's rope base (deepseek2.cpp: freq_base 10000)
    w.kv_data[0]["deepseek2-ocr.rope.freq_base"].value = 10000.0
    _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p, n_kv=N_HEAD)
        _norms(w, p, "attn_norm", "ffn_norm")
        if il == 0:
            _dense_ffn(w, p)
        else:
            _experts(w, p, FF_EXP, q4=False, shared=FF_EXP)
    _finish(w)
    return path


def clef(path: Path, n_layer: int = 4) -> Path:
    """CLEF (src/models/clef.cpp): a decision model, Qwen3.5's trunk (three gated delta nets
    then an attention layer, src/models/qwen35.cpp) run without any memory (create_memory:
    nullptr; the delta nets start from zero each batch), a score per token from a joint
    decision head (decision.*, dec.blk.N.*: routing then joint blocks n_embd_h wide, the width
    of decision.proj_memory). clef.decision.type turns llama-server's embedding mode on."""
    head, d_conv, d_state, n_group, dt_rank = HEAD, 4, 32, 2, 4
    key_dim, value_dim = d_state * n_group, d_state * dt_rank
    h, ff_h, routing, joint = 64, 128, 1, 1
    w = _start(path, "clef", _keys(n_layer, **{
        "ssm.conv_kernel": d_conv, "ssm.inner_size": value_dim, "ssm.state_size": d_state,
        "ssm.group_count": n_group, "ssm.time_step_rank": dt_rank,
        "decision.routing_block_count": routing, "decision.block_count": joint,
        "decision.head_count": 2}))  # fmt: skip
    w.add_array("clef.rope.dimension_sections", [11, 11, 10, 0])
    w.add_float32("clef.attention.layer_norm_epsilon", 1e-5)
    w.add_string("clef.decision.type", "clef")
    _output(w, tied=True)
    for il in range(n_layer):
        p = f"blk.{il}."
        _norms(w, p, "attn_norm", "post_attention_norm")
        if (il + 1) % 4 == 0:
            _put(w, p, (("attn_q.weight", (E, 2 * N_HEAD * head)),
                        ("attn_k.weight", (E, N_KV * head)), ("attn_v.weight", (E, N_KV * head)),
                        ("attn_output.weight", (N_HEAD * head, E))))  # fmt: skip
            _norms(w, p, "attn_q_norm", "attn_k_norm", width=head)
        else:
            _put(w, p, (("attn_qkv.weight", (E, 2 * key_dim + value_dim)),
                        ("attn_gate.weight", (E, value_dim)),
                        ("ssm_conv1d.weight", (d_conv, 2 * key_dim + value_dim)),
                        ("ssm_dt.bias", (dt_rank,)), ("ssm_a", (dt_rank,)),
                        ("ssm_beta.weight", (E, dt_rank)), ("ssm_alpha.weight", (E, dt_rank)),
                        ("ssm_norm.weight", (d_state,)), ("ssm_out.weight", (value_dim, E))))  # fmt: skip
        _dense_ffn(w, p)

    def attn(p: str, *names: str) -> None:
        for name in names:
            _put(w, p, ((f"{name}.weight", (h, h)), (f"{name}.bias", (h,))))

    for il in range(routing + joint):
        p = f"dec.blk.{il}."
        if il < routing:
            _norms(w, p, "cross_attn_norm_kv", width=h)
            _norms(w, p, "cross_attn_norm_kv", width=h, suffix=".bias")
        else:
            _norms(w, p, "attn_norm", width=h)
            _norms(w, p, "attn_norm", width=h, suffix=".bias")
            attn(p, "attn_q", "attn_k", "attn_v", "attn_o")
        _norms(w, p, "cross_attn_norm", "ffn_norm", width=h)
        _norms(w, p, "cross_attn_norm", "ffn_norm", width=h, suffix=".bias")
        attn(p, "cross_attn_q", "cross_attn_k", "cross_attn_v", "cross_attn_o")
        _put(w, p, (("ffn_up.weight", (h, ff_h)), ("ffn_up.bias", (ff_h,)),
                    ("ffn_down.weight", (ff_h, h)), ("ffn_down.bias", (h,))))  # fmt: skip
    _norms(w, "decision.", "hidden_norm")
    _norms(w, "decision.", "hidden_norm", suffix=".bias")
    for name in ("option_summary_norm", "field_norm", "option_norm"):
        _norms(w, "decision.", name, width=h)
        _norms(w, "decision.", name, width=h, suffix=".bias")
    for name in ("memory", "question", "option_question", "global", "option_context",
                 "option_lexical"):  # fmt: skip
        _tensor(w, f"decision.proj_{name}.weight", E, h)
    _put(w, "", (("decision.scales", (3,)), ("token_types.weight", (h, 3)),
                 ("decision.scorer.weight", (4 * h, h)), ("decision.scorer.bias", (h,)),
                 ("decision.scorer_out.weight", (h, 1)), ("decision.scorer_out.bias", (1,))))  # fmt: skip
    _finish(w)
    return path


# --- recurrent ---------------------------------------------------------------------------------


def rwkv6qwen2(path: Path, n_layer: int = 4, n_kv: int = N_KV) -> Path:
    """RWKV6-Qwen2 (src/models/rwkv6qwen2.cpp): RWKV 6's time mix with K and V n_kv heads wide
    (attention.head_count_kv), RMS norms, a Qwen2 SwiGLU MLP and no channel mix: one token-shift
    row (token_shift_count 1), no token_embd_norm."""
    head, mix, decay = HEAD, 32, 64
    w = _start(path, "rwkv6qwen2", {
        "block_count": n_layer, "embedding_length": E, "context_length": 1048576,
        "feed_forward_length": FF, "attention.head_count": E // head,
        "attention.head_count_kv": n_kv, "wkv.head_size": head, "time_mix_extra_dim": mix,
        "time_decay_extra_dim": decay, "token_shift_count": 1,
    })  # fmt: skip
    _output(w)
    kv = n_kv * head
    for il in range(n_layer):
        p = f"blk.{il}."
        _put(w, p, (
            ("time_mix_w1.weight", (E, mix * 5)), ("time_mix_w2.weight", (mix, E, 5)),
            ("time_mix_lerp_x.weight", (E, 1, 1)), ("time_mix_lerp_fused.weight", (E, 1, 1, 5)),
            ("time_mix_decay.weight", (E,)), ("time_mix_decay_w1.weight", (E, decay)),
            ("time_mix_decay_w2.weight", (decay, E)), ("time_mix_key.weight", (E, kv)),
            ("time_mix_value.weight", (E, kv)), ("time_mix_receptance.weight", (E, E)),
            ("time_mix_gate.weight", (E, E)), ("time_mix_output.weight", (E, E)),
        ))  # fmt: skip
        _norms(w, p, "attn_norm", "ffn_norm")
        _dense_ffn(w, p)
    _finish(w)
    return path


def arwkv7(path: Path, n_layer: int = 4) -> Path:
    """ARWKV-7 (src/models/arwkv7.cpp): RWKV 7's time mix (decay, ICLR, value-mix and gate
    LoRAs, no group norm) in front of a Qwen2 SwiGLU MLP: one token-shift row, RMS norms."""
    head, decay, iclr, vmix, gate = HEAD, 32, 32, 32, 64
    w = _start(path, "arwkv7", {
        "block_count": n_layer, "embedding_length": E, "context_length": 1048576,
        "feed_forward_length": FF, "attention.head_count": 0, "wkv.head_size": head,
        "attention.decay_lora_rank": decay, "attention.iclr_lora_rank": iclr,
        "attention.value_residual_mix_lora_rank": vmix, "attention.gate_lora_rank": gate,
        "token_shift_count": 1,
    })  # fmt: skip
    _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        v_rank = iclr if il == 0 else vmix
        _put(w, p, (
            ("time_mix_w0.weight", (E,)), ("time_mix_w1.weight", (E, decay)),
            ("time_mix_w2.weight", (decay, E)), ("time_mix_a0.weight", (E,)),
            ("time_mix_a1.weight", (E, iclr)), ("time_mix_a2.weight", (iclr, E)),
            ("time_mix_v0.weight", (E,)), ("time_mix_v1.weight", (E, v_rank)),
            ("time_mix_v2.weight", (v_rank, E)), ("time_mix_g1.weight", (E, gate)),
            ("time_mix_g2.weight", (gate, E)), ("time_mix_lerp_fused.weight", (E, 1, 1, 6)),
            ("time_mix_k_k.weight", (E,)), ("time_mix_k_a.weight", (E,)),
            ("time_mix_r_k.weight", (E,)), ("time_mix_key.weight", (E, E)),
            ("time_mix_value.weight", (E, E)), ("time_mix_receptance.weight", (E, E)),
            ("time_mix_output.weight", (E, E)),
        ))  # fmt: skip
        _norms(w, p, "attn_norm", "ffn_norm")
        _dense_ffn(w, p)
    _finish(w)
    return path


# --- the checks --------------------------------------------------------------------------------

BUILDERS: list[Builder] = [
    minicpm, plamo, plamo3, jais2, chameleon, mellum, nanbeige, nanbeige_looped, maincoder, qwen,
    hrm_text, talkie, spark2_5, maple, muse_glimmer, paddleocr, deepseek2_ocr, rwkv6qwen2, arwkv7,
]  # fmt: skip


@pytest.mark.parametrize("build", BUILDERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(("ctx", "slots", "fa"), SETTINGS)
def test_cache_state_and_weights_are_what_llama_server_allocates(
    tmp_path_factory: pytest.TempPathFactory, build: Builder, ctx: int, slots: int, fa: bool
) -> None:
    """KV cache and recurrent state to the log's 0.01 MiB, the host's weights to 0.02 MiB."""
    _check_cache_and_weights(measure(tmp_path_factory, build, ctx, slots, fa))


@pytest.mark.parametrize("build", BUILDERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(("ctx", "slots", "fa"), SETTINGS)
def test_compute_buffer_is_never_under_llama_servers(
    tmp_path_factory: pytest.TempPathFactory, build: Builder, ctx: int, slots: int, fa: bool
) -> None:
    """The plan's compute buffer is never under the logged one (how far over: the message)."""
    logged, plan = measure(tmp_path_factory, build, ctx, slots, fa)["compute"]
    assert plan >= logged, f"compute {_mib((logged, plan))} ({(plan - logged) / MIB:+.2f})"


_T, _F = True, False
# What the plan must read off each file, as llama.cpp's loaders set it
LAYOUT: dict[str, dict[str, object]] = {
    "plamo3": {"swa_layers": [_T] * 7 + [_F], "sliding_window": 512},
    "mellum": {"swa_layers": [_T, _T, _T, _F], "sliding_window": 512, "n_expert": N_EXP},
    "muse_glimmer": {"swa_layers": [_T, _T, _T, _F], "sliding_window": 512},
    "spark2_5": {"swa_layers": SPARK_SWA, "sliding_window": 512},
    "maple": {"swa_layers": MAPLE_SWA, "sliding_window": 512, "n_expert": N_EXP},
    "minicpm": {"swa_layers": [], "recurrent_layers": []},
    "nanbeige_looped": {"n_layer": 6, "n_head_kv": [N_KV] * 6},
    "hrm_text": {"n_layer": 8, "n_head_kv": [N_KV] * 8},
    "qwen": {"n_head_kv": [N_HEAD] * 3},
    "deepseek2_ocr": {"mla": False, "n_head_kv": [N_HEAD] * 3},
    "rwkv6qwen2": {"recurrent_layers": [_T] * 4},
    "arwkv7": {"recurrent_layers": [_T] * 4},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(LAYOUT))
def test_the_plan_reads_the_layout_llama_cpp_loads(tmp_path: Path, name: str) -> None:
    """What the plan reads off each file is what llama.cpp's loader sets."""
    arch = facts_from_gguf(globals()[name](tmp_path / "m.gguf")).arch
    for field, want in LAYOUT[name].items():
        assert getattr(arch, field) == want, field


def test_a_decision_model_is_not_a_completion_server(tmp_path: Path) -> None:
    """CLEF is a decision model: llama-server serves it on /v1/systemone with the file's own
    "systemone" template and does not start without one (what deploy would render), so
    deployer refuses it in one line before rendering (test_render_out.py)."""
    from _llama import run_server

    from deployer.core.model.facts import DECISION_ARCHS

    path = clef(tmp_path / "m.gguf")
    with pytest.raises(RuntimeError, match='decision model has no \\"systemone\\" template'):
        run_server(path, ["-c", "4096", "--fit", "off", "-t", "2"], timeout_s=60)
    assert facts_from_gguf(path).arch.architecture in DECISION_ARCHS
