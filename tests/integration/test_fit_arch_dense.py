"""The plan's KV cache, recurrent state, weights and compute buffer against a real llama-server,
on small real-shaped files of the dense and older architectures the fit had not been checked
on: Command R (a parallel attention/feed-forward block), StarCoder 2, StableLM (partial rotary;
the 12B's parallel block with per-head Q/K norms), InternLM 2, EXAONE 3, MiniCPM 3 (a low-rank
Q and KV whose K heads are wider than the V heads), ChatGLM and GLM-4 (a fused gate|up, GLM-4's
post-norms), OpenELM (heads and feed-forward widths per layer), GPT-2 and StarCoder (learned
positions), GPT-NeoX, MPT, BLOOM, Falcon, Phi-2, Gemma, DeciLM / Nemotron-51B (attention-free,
"linear" and feed-forward-free layers), PLM, Apertus, Arcee, ERNIE 4.5, Hunyuan dense, JAIS,
Refact, Nemotron, OLMo, Orion, XVERSE, Baichuan, CodeShell and BitNet. ALiBi (MPT, BLOOM,
JAIS, Refact) replaces rope; LayerNorm with or without biases, fused QKV with biases as their
converters (conversion/*.py) write them.

Weights are zeros; the buffers llama-server logs are the truth: the KV cache and recurrent
state to the log's 0.01 MiB, the mapped weights to 0.02 MiB, the compute buffer never above
the plan. Tensors are written in llama-quantize's order, exactly those the pinned loader
creates (src/models/<arch>.cpp: load_arch_hparams, load_arch_tensors)."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from gguf import GGUFWriter

from deployer.adapters.gguf_files import facts_from_gguf
from deployer.core.fit.llamalog import parse_buffers
from deployer.core.fit.memory import (
    FitSettings,
    MachineSpec,
    as_run,
    compute_bytes,
    estimate_memory,
    kv_bytes,
    recurrent_bytes,
)
from deployer.core.units import MIB
from tests.integration.test_fit_architectures import FF, E, V, _start, _tensor
from tests.integration.test_fit_architectures import _finish as _write

pytestmark = [pytest.mark.llama_server, pytest.mark.usefixtures("llama_server_prefix")]

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

N_HEAD, N_KV, HEAD = 4, 2, 64  # 4 query heads of 64 (= E), 2 KV heads unless a model has MHA/MQA
Shape = tuple[int, ...]
Builder = Callable[[Path], Path]

_CPU = MachineSpec(kind="cpu", device_count=0, device_budget_bytes=0, device_overhead_bytes=0,
                   host_budget_bytes=2**34, cpu_threads=2)  # fmt: skip


# --- helpers ----------------------------------------------------------------------------------


def _finish(w: GGUFWriter) -> None:
    """Write the file with its tensors in llama-quantize's order (outside the blocks first, then
    block by block, by name within each), as every quantized GGUF has them."""

    def key(name: str) -> tuple[int, str]:
        m = re.match(r"blk\.(\d+)\.", name)
        return (int(m.group(1)) if m else -1, name)

    w.tensors[0] = dict(sorted(w.tensors[0].items(), key=lambda kv: key(kv[0])))
    _write(w)


def _put(w: GGUFWriter, prefix: str, specs: list[tuple[str, Shape]]) -> None:
    for name, shape in specs:
        _tensor(w, prefix + name, *shape)


def _begin(path: Path, arch: str, n_layer: int, *, n_head: int | list[int] = N_HEAD,
           n_kv: int | list[int] = N_KV, ff: int | list[int] = FF, ctx: int = 32768,
           rope: int | None = HEAD, layer_norm: bool = False,
           extra: dict[str, int] | None = None) -> GGUFWriter:  # fmt: skip
    """The common keys (llama_model_base::load_hparams); `layer_norm`: the LayerNorm epsilon the
    LayerNorm architectures require (LLM_KV_ATTENTION_LAYERNORM_EPS) beside the RMS one
    _start writes. Lists become per-layer arrays (get_key_or_arr)."""
    keys = {"block_count": n_layer, "embedding_length": E, "context_length": ctx} | (extra or {})
    if rope is not None:
        keys["rope.dimension_count"] = rope
    w = _start(path, arch, keys)
    for key, value in (("feed_forward_length", ff), ("attention.head_count", n_head),
                       ("attention.head_count_kv", n_kv)):  # fmt: skip
        if isinstance(value, list):
            w.add_array(f"{arch}.{key}", value)
        else:
            w.add_uint32(f"{arch}.{key}", value)
    if layer_norm:
        w.add_float32(f"{arch}.attention.layer_norm_epsilon", 1e-5)
    return w


def _qkv(n_kv: int = N_KV, *, q: int = E, head: int = HEAD, bias: bool = False,
         fused: bool = False, out_bias: bool = False) -> list[tuple[str, Shape]]:  # fmt: skip
    """Q (q wide), K and V (n_kv heads), separate or fused as attn_qkv, optionally biased; the
    output projection back to E (`out_bias`: with attn_output.bias)."""
    kv = n_kv * head
    out: list[tuple[str, Shape]] = []
    if fused:
        out.append(("attn_qkv.weight", (E, q + 2 * kv)))
        out += _biases(("attn_qkv", q + 2 * kv)) if bias else []
    else:
        out += [("attn_q.weight", (E, q)), ("attn_k.weight", (E, kv)), ("attn_v.weight", (E, kv))]
        out += _biases(("attn_q", q), ("attn_k", kv), ("attn_v", kv)) if bias else []
    out.append(("attn_output.weight", (q, E)))
    return out + (_biases(("attn_output", E)) if out_bias else [])


def _gated(ff: int = FF) -> list[tuple[str, Shape]]:
    return [("ffn_gate.weight", (E, ff)), ("ffn_down.weight", (ff, E)), ("ffn_up.weight", (E, ff))]


def _plain(ff: int = FF, *, bias: bool = False) -> list[tuple[str, Shape]]:
    """A non-gated feed-forward (GELU, ReLU^2): up and down."""
    out: list[tuple[str, Shape]] = [("ffn_down.weight", (ff, E)), ("ffn_up.weight", (E, ff))]
    return out + (_biases(("ffn_down", E), ("ffn_up", ff)) if bias else [])


def _biases(*specs: tuple[str, int]) -> list[tuple[str, Shape]]:
    return [(f"{name}.bias", (width,)) for name, width in specs]


def _ln(*names: str, bias: bool = True) -> list[tuple[str, Shape]]:
    """LayerNorms (with biases unless told) of the given names."""
    return [spec for name in names for spec in _norm(name, bias=bias)]


def _norm(name: str, *, bias: bool = False) -> list[tuple[str, Shape]]:
    out: list[tuple[str, Shape]] = [(f"{name}.weight", (E,))]
    return out + (_biases((name, E)) if bias else [])


def _outputs(w: GGUFWriter, *, tied: bool = False, norm_bias: bool = False) -> None:
    """token_embd, the output norm (with a bias: LayerNorm) and, untied, output.weight."""
    _tensor(w, "token_embd.weight", E, V)
    _put(w, "", _norm("output_norm", bias=norm_bias))
    if not tied:
        _tensor(w, "output.weight", E, V)


def _blocks(w: GGUFWriter, n_layer: int, specs: list[tuple[str, Shape]]) -> None:
    for il in range(n_layer):
        _put(w, f"blk.{il}.", specs)


def _llama_like(path: Path, arch: str, n_layer: int = 4, *, tied: bool = False,
                n_kv: int = N_KV) -> Path:  # fmt: skip
    """An RMSNorm Llama block (attn_norm, Q/K/V/O, ffn_norm, SwiGLU): InternLM 2, EXAONE 3,
    ERNIE 4.5 dense, XVERSE, Baichuan 2 7B, Refact (ALiBi)."""
    w = _begin(path, arch, n_layer, n_kv=n_kv)
    _outputs(w, tied=tied)
    specs = _qkv(n_kv) + _norm("attn_norm") + _norm("ffn_norm") + _gated()
    _blocks(w, n_layer, specs)
    _finish(w)
    return path


# --- the builders ------------------------------------------------------------------------------


def command_r(path: Path, n_layer: int = 4) -> Path:
    """Command R (src/models/command-r.cpp): attention and feed-forward side by side on one
    LayerNorm (no bias), the output always token_embd (TENSOR_DUPLICATED), a logit scale."""
    w = _begin(path, "command-r", n_layer, layer_norm=True)
    w.add_float32("command-r.logit_scale", 0.0625)
    _outputs(w, tied=True)
    _blocks(w, n_layer, _qkv() + _norm("attn_norm") + _gated())
    _finish(w)
    return path


def starcoder2(path: Path, n_layer: int = 4) -> Path:
    """StarCoder 2 (src/models/starcoder2.cpp): LayerNorm with biases, biased Q/K/V/O, a biased
    GELU feed-forward (up, down), GQA, tied (StarCoder2-3B/7B)."""
    w = _begin(path, "starcoder2", n_layer, layer_norm=True)
    _outputs(w, tied=True, norm_bias=True)
    _blocks(w, n_layer, _qkv(bias=True, out_bias=True)
            + _ln("attn_norm", "ffn_norm") + _plain(bias=True))  # fmt: skip
    _finish(w)
    return path


def stablelm(path: Path, n_layer: int = 4) -> Path:
    """StableLM 2 1.6B (src/models/stablelm.cpp): LayerNorm with biases, biased Q/K/V, rope on a
    quarter of each head (partial_rotary_factor 0.25), MHA."""
    w = _begin(path, "stablelm", n_layer, n_kv=N_HEAD, rope=HEAD // 4, layer_norm=True)
    _outputs(w, norm_bias=True)
    _blocks(w, n_layer, _qkv(N_HEAD, bias=True) + _ln("attn_norm", "ffn_norm") + _gated())
    _finish(w)
    return path


def stablelm_parallel(path: Path, n_layer: int = 4) -> Path:
    """StableLM 2 12B: no feed-forward norm (attention and feed-forward in parallel), per-head
    Q and K LayerNorms ({head, heads}), GQA."""
    w = _begin(path, "stablelm", n_layer, rope=HEAD // 4, layer_norm=True)
    _outputs(w, norm_bias=True)
    _blocks(w, n_layer, _qkv() + _norm("attn_norm", bias=True) + _gated()
            + [("attn_q_norm.weight", (HEAD, N_HEAD)),
               ("attn_k_norm.weight", (HEAD, N_KV))])  # fmt: skip
    _finish(w)
    return path


def internlm2(path: Path) -> Path:
    """InternLM 2 (src/models/internlm2.cpp): a Llama block (its wqkv split by the converter)."""
    return _llama_like(path, "internlm2")


def exaone(path: Path) -> Path:
    """EXAONE 3 / 3.5 (src/models/exaone.cpp): a Llama block, tied (2.4B)."""
    return _llama_like(path, "exaone", tied=True)


def minicpm3(path: Path, n_layer: int = 4) -> Path:
    """MiniCPM 3 (src/models/minicpm3.cpp; conversion/minicpm.py): DeepSeek-like low-rank Q and
    KV projections but an ordinary per-head cache: K heads of key_length = nope + rope (96),
    V heads of n_embd / n_head (64, no value_length key), as many KV heads as query heads;
    LongRoPE factors."""
    nope, rope, q_lora, kv_lora = 64, 32, 128, 64
    w = _begin(path, "minicpm3", n_layer, n_kv=N_HEAD, rope=rope,
               extra={"attention.key_length": nope + rope, "attention.q_lora_rank": q_lora,
                      "attention.kv_lora_rank": kv_lora, "vocab_size": V})  # fmt: skip
    _outputs(w)
    _tensor(w, "rope_factors_long.weight", rope // 2)
    _tensor(w, "rope_factors_short.weight", rope // 2)
    _blocks(w, n_layer, [
        ("attn_norm.weight", (E,)), ("attn_q_a_norm.weight", (q_lora,)),
        ("attn_kv_a_norm.weight", (kv_lora,)), ("attn_q_a.weight", (E, q_lora)),
        ("attn_q_b.weight", (q_lora, N_HEAD * (nope + rope))),
        ("attn_kv_a_mqa.weight", (E, kv_lora + rope)),
        ("attn_kv_b.weight", (kv_lora, N_HEAD * (nope + HEAD))),
        ("attn_output.weight", (N_HEAD * HEAD, E)), ("ffn_norm.weight", (E,)), *_gated(),
    ])  # fmt: skip
    _finish(w)
    return path


def chatglm(path: Path, n_layer: int = 4) -> Path:
    """ChatGLM 3 / GLM-4-9B-chat (src/models/chatglm.cpp): a fused, biased QKV, rope on half of
    each head, a fused gate|up projection 2 x feed_forward_length wide, 2 KV heads."""
    w = _begin(path, "chatglm", n_layer, rope=HEAD // 2)
    _outputs(w)
    _blocks(w, n_layer, _qkv(bias=True, fused=True) + _norm("attn_norm") + _norm("ffn_norm")
            + [("ffn_up.weight", (E, 2 * FF)), ("ffn_down.weight", (FF, E))])  # fmt: skip
    _finish(w)
    return path


def glm4(path: Path, n_layer: int = 4) -> Path:
    """GLM-4-0414 dense (src/models/glm4.cpp): biased Q/K/V, post-attention and post-feed-forward
    norms, a fused gate|up, rope on half of each head."""
    w = _begin(path, "glm4", n_layer, rope=HEAD // 2)
    _outputs(w)
    _blocks(w, n_layer, _qkv(bias=True) + _norm("attn_norm") + _norm("post_attention_norm")
            + _norm("ffn_norm") + _norm("post_ffw_norm")
            + [("ffn_up.weight", (E, 2 * FF)), ("ffn_down.weight", (FF, E))])  # fmt: skip
    _finish(w)
    return path


OPENELM_HEADS, OPENELM_KV, OPENELM_FF = [2, 3, 4, 6], [1, 1, 2, 3], [256, 384, 640, 768]


def openelm(path: Path) -> Path:
    """OpenELM (src/models/openelm.cpp; conversion/openelm.py): query heads, KV heads and the
    feed-forward width set per layer (arrays), a fused QKV of (heads + 2 KV heads) x 64,
    per-head Q/K norms, tied. Heads x 64 may exceed the embedding (the last layer: 384); each
    layer's heads a multiple of its KV heads (ggml broadcasts K over the query heads)."""
    n_layer = len(OPENELM_HEADS)
    w = _begin(path, "openelm", n_layer, n_head=OPENELM_HEADS, n_kv=OPENELM_KV, ff=OPENELM_FF,
               extra={"attention.key_length": HEAD, "attention.value_length": HEAD})  # fmt: skip
    _outputs(w, tied=True)
    for il in range(n_layer):
        h, kv, ff = OPENELM_HEADS[il], OPENELM_KV[il], OPENELM_FF[il]
        _put(w, f"blk.{il}.", [
            ("attn_norm.weight", (E,)), ("attn_qkv.weight", (E, (h + 2 * kv) * HEAD)),
            ("attn_q_norm.weight", (HEAD,)), ("attn_k_norm.weight", (HEAD,)),
            ("attn_output.weight", (h * HEAD, E)), ("ffn_norm.weight", (E,)), *_gated(ff),
        ])  # fmt: skip
    _finish(w)
    return path


def _gpt2_like(path: Path, arch: str, n_layer: int, n_kv: int, ctx: int) -> Path:
    """GPT-2 and StarCoder (src/models/gpt2.cpp, starcoder.cpp): learned positions
    (position_embd, n_ctx_train rows), LayerNorm with biases, a fused biased QKV, a biased GELU
    feed-forward, biased output projection; no rope."""
    w = _begin(path, arch, n_layer, n_kv=n_kv, ctx=ctx, rope=None, layer_norm=True)
    _outputs(w, norm_bias=True)
    _tensor(w, "position_embd.weight", E, ctx)
    _blocks(w, n_layer, _qkv(n_kv, bias=True, fused=True, out_bias=True)
            + _ln("attn_norm", "ffn_norm") + _plain(bias=True))  # fmt: skip
    _finish(w)
    return path


def gpt2(path: Path) -> Path:
    """GPT-2: MHA, 1024 learned positions (a longer context runs past them; llama-server warns)."""
    return _gpt2_like(path, "gpt2", 4, N_HEAD, 1024)


def starcoder(path: Path) -> Path:
    """StarCoder / SantaCoder: multi-query attention (one KV head), 8192 learned positions."""
    return _gpt2_like(path, "starcoder", 4, 1, 8192)


def gptneox(path: Path, n_layer: int = 4) -> Path:
    """GPT-NeoX / Pythia (src/models/gptneox.cpp): parallel residual (use_parallel_residual),
    rope on a quarter of each head, LayerNorm with biases, a fused biased QKV, MHA."""
    w = _begin(path, "gptneox", n_layer, n_kv=N_HEAD, rope=HEAD // 4, layer_norm=True)
    w.add_bool("gptneox.use_parallel_residual", True)
    _outputs(w, norm_bias=True)
    _blocks(w, n_layer, _qkv(N_HEAD, bias=True, fused=True, out_bias=True)
            + _ln("attn_norm", "ffn_norm") + _plain(bias=True))  # fmt: skip
    _finish(w)
    return path


def mpt(path: Path, n_layer: int = 4) -> Path:
    """MPT-7B (src/models/mpt.cpp): ALiBi (max_alibi_bias 8), no rope, no biases (LayerNorm
    without bias), a fused QKV, a GELU feed-forward, MHA, tied."""
    w = _begin(path, "mpt", n_layer, n_kv=N_HEAD, rope=None, layer_norm=True)
    w.add_float32("mpt.attention.max_alibi_bias", 8.0)
    _outputs(w, tied=True)
    _blocks(w, n_layer, _qkv(N_HEAD, fused=True) + _norm("attn_norm") + _norm("ffn_norm")
            + _plain())  # fmt: skip
    _finish(w)
    return path


def bloom(path: Path, n_layer: int = 4) -> Path:
    """BLOOM (src/models/bloom.cpp): ALiBi (fixed 8), a LayerNorm on the embeddings
    (token_embd_norm), biases everywhere, a fused QKV, MHA, tied."""
    w = _begin(path, "bloom", n_layer, n_kv=N_HEAD, rope=None, layer_norm=True)
    _outputs(w, tied=True, norm_bias=True)
    _put(w, "", _norm("token_embd_norm", bias=True))
    _blocks(w, n_layer, _qkv(N_HEAD, bias=True, fused=True, out_bias=True)
            + _ln("attn_norm", "ffn_norm") + _plain(bias=True))  # fmt: skip
    _finish(w)
    return path


def falcon(path: Path, n_layer: int = 4) -> Path:
    """Falcon 7B (src/models/falcon.cpp): multi-query attention (one KV head), one LayerNorm
    feeding attention and feed-forward in parallel, a fused QKV, GELU, no biases."""
    w = _begin(path, "falcon", n_layer, n_kv=1, layer_norm=True)
    _outputs(w, norm_bias=True)
    _blocks(w, n_layer, _qkv(1, fused=True) + _norm("attn_norm", bias=True) + _plain())
    _finish(w)
    return path


def phi2(path: Path, n_layer: int = 4) -> Path:
    """Phi-2 (src/models/phi2.cpp): attention and feed-forward in parallel on one LayerNorm, a
    fused biased QKV, rope on half of each head (32 of 64; the real model 32 of 80), a biased
    output (output.bias), MHA."""
    w = _begin(path, "phi2", n_layer, n_kv=N_HEAD, rope=HEAD // 2, layer_norm=True)
    _outputs(w, norm_bias=True)
    _tensor(w, "output.bias", V)
    _blocks(w, n_layer, _qkv(N_HEAD, bias=True, fused=True, out_bias=True)
            + _norm("attn_norm", bias=True) + _plain(bias=True))  # fmt: skip
    _finish(w)
    return path


def gemma(path: Path, n_layer: int = 4) -> Path:
    """Gemma 2B (src/models/gemma.cpp): 256-wide heads (key_length 256, so Q is 4 x the
    embedding here), multi-query attention, a GELU-gated feed-forward, tied."""
    head = 256
    w = _begin(path, "gemma", n_layer, n_kv=1, rope=head,
               extra={"attention.key_length": head, "attention.value_length": head})  # fmt: skip
    _outputs(w, tied=True)
    _blocks(w, n_layer, _qkv(1, q=N_HEAD * head, head=head) + _norm("attn_norm")
            + _norm("ffn_norm") + _gated())  # fmt: skip
    _finish(w)
    return path


DECI_HEADS, DECI_KV, DECI_FF = [4, 4, 4, 0], [2, 1, 0, 0], [512, 0, 768, 256]


def deci(path: Path) -> Path:
    """Llama-3.1-Nemotron-51B (src/models/deci.cpp; conversion/deci.py): per-layer heads, KV
    heads and feed-forward widths: an attention layer, one with one KV head and no feed-forward
    (Ultra's FFN-free layer), a "linear attention" layer (heads but no KV heads: attn_output
    alone) and an attention-free layer (no heads). The FFN-free layer is not the last: the
    graph then drops the output-row selection and llama-server aborts (GGML_ASSERT(buffer) in
    llm_graph_input_out_ids::set_input)."""
    n_layer = len(DECI_HEADS)
    w = _begin(path, "deci", n_layer, n_head=DECI_HEADS, n_kv=DECI_KV, ff=DECI_FF,
               extra={"attention.key_length": HEAD, "attention.value_length": HEAD,
                      "vocab_size": V})  # fmt: skip
    _outputs(w)
    for il in range(n_layer):
        h, kv, ff = DECI_HEADS[il], DECI_KV[il], DECI_FF[il]
        specs: list[tuple[str, Shape]] = []
        if h and kv:
            specs += _norm("attn_norm") + _qkv(kv)
        elif h:
            specs += [*_norm("attn_norm"), ("attn_output.weight", (E, E))]
        if ff:
            specs += _norm("ffn_norm") + _gated(ff)
        _put(w, f"blk.{il}.", specs)
    _finish(w)
    return path


def plm(path: Path, n_layer: int = 4) -> Path:
    """PLM (src/models/plm.cpp; conversion/plm.py): a full-rank Q, a low-rank KV whose K heads
    are nope + rope wide (96) and V heads value_length (64), MHA, a ReLU^2 feed-forward
    (up, down), tied."""
    nope, rope, kv_lora = 64, 32, 64
    w = _begin(path, "plm", n_layer, n_kv=N_HEAD, rope=rope,
               extra={"attention.key_length": nope + rope, "attention.value_length": HEAD,
                      "attention.kv_lora_rank": kv_lora, "vocab_size": V})  # fmt: skip
    _outputs(w, tied=True)
    _blocks(w, n_layer, [
        ("attn_norm.weight", (E,)), ("attn_q.weight", (E, N_HEAD * (nope + rope))),
        ("attn_kv_a_mqa.weight", (E, kv_lora + rope)), ("attn_kv_a_norm.weight", (kv_lora,)),
        ("attn_kv_b.weight", (kv_lora, N_HEAD * (nope + HEAD))),
        ("attn_output.weight", (N_HEAD * HEAD, E)), ("ffn_norm.weight", (E,)), *_plain(),
    ])  # fmt: skip
    _finish(w)
    return path


def apertus(path: Path, n_layer: int = 4) -> Path:
    """Apertus (src/models/apertus.cpp): xIELU activation (its four parameters per layer), Q/K
    norms, a non-gated feed-forward (up, down), GQA."""
    w = _begin(path, "apertus", n_layer)
    for key, value in (("alpha_n", 0.8), ("alpha_p", 0.8), ("beta", 0.5), ("eps", -1e-6)):
        w.add_array(f"xielu.{key}", [value] * n_layer)  # LLM_KV_XIELU_*: no arch prefix
    _outputs(w)
    _blocks(w, n_layer, _qkv() + _norm("attn_norm") + _norm("ffn_norm") + _plain()
            + [("attn_q_norm.weight", (HEAD,)), ("attn_k_norm.weight", (HEAD,))])  # fmt: skip
    _finish(w)
    return path


def arcee(path: Path, n_layer: int = 4) -> Path:
    """Arcee AFM-4.5B (src/models/arcee.cpp): a Llama block with a ReLU^2 feed-forward (up,
    down), GQA."""
    w = _begin(path, "arcee", n_layer)
    _outputs(w)
    _blocks(w, n_layer, _qkv() + _norm("attn_norm") + _norm("ffn_norm") + _plain())
    _finish(w)
    return path


def ernie4_5(path: Path) -> Path:
    """ERNIE 4.5 0.3B (src/models/ernie4-5.cpp): a dense Llama block, tied."""
    return _llama_like(path, "ernie4_5", tied=True)


def hunyuan_dense(path: Path, n_layer: int = 4) -> Path:
    """Hunyuan dense 0.5B-7B (src/models/hunyuan-vl.cpp, reused): Q/K norms, GQA, tied."""
    w = _begin(path, "hunyuan-dense", n_layer)
    _outputs(w, tied=True)
    _blocks(w, n_layer, _qkv() + _norm("attn_norm") + _norm("ffn_norm") + _gated()
            + [("attn_q_norm.weight", (HEAD,)), ("attn_k_norm.weight", (HEAD,))])  # fmt: skip
    _finish(w)
    return path


def jais(path: Path, n_layer: int = 4) -> Path:
    """JAIS (src/models/jais.cpp): ALiBi, LayerNorm with biases, a fused biased QKV, a biased
    SwiGLU feed-forward, MHA."""
    w = _begin(path, "jais", n_layer, n_kv=N_HEAD, rope=None, layer_norm=True)
    w.add_float32("jais.attention.max_alibi_bias", 8.0)
    _outputs(w, norm_bias=True)
    _blocks(w, n_layer, _qkv(N_HEAD, bias=True, fused=True, out_bias=True)
            + _ln("attn_norm", "ffn_norm") + _gated()
            + _biases(("ffn_down", E), ("ffn_gate", FF), ("ffn_up", FF)))  # fmt: skip
    _finish(w)
    return path


def refact(path: Path) -> Path:
    """Refact 1.6B (src/models/refact.cpp): ALiBi (fixed 8), an RMSNorm Llama block, MQA."""
    return _llama_like(path, "refact", n_kv=1)


def nemotron(path: Path, n_layer: int = 4) -> Path:
    """Nemotron 3/4 / Minitron (src/models/nemotron.cpp): LayerNorm1P with biases, rope on half
    of each head, a ReLU^2 feed-forward (up, down), GQA."""
    w = _begin(path, "nemotron", n_layer, rope=HEAD // 2, layer_norm=True)
    _outputs(w, norm_bias=True)
    _blocks(w, n_layer, _qkv() + _ln("attn_norm", "ffn_norm") + _plain())
    _finish(w)
    return path


def olmo(path: Path, n_layer: int = 4) -> Path:
    """OLMo 1 (src/models/olmo.cpp): non-parametric LayerNorms (no norm tensors at all), a
    clamped QKV (clamp_kqv), MHA, tied (OLMo-1B)."""
    w = _begin(path, "olmo", n_layer, n_kv=N_HEAD, layer_norm=True)
    w.add_float32("olmo.attention.clamp_kqv", 8.0)
    _tensor(w, "token_embd.weight", E, V)
    _blocks(w, n_layer, _qkv(N_HEAD) + _gated())
    _finish(w)
    return path


def orion(path: Path, n_layer: int = 4) -> Path:
    """Orion 14B (src/models/orion.cpp): a Llama block with LayerNorms with biases, MHA."""
    w = _begin(path, "orion", n_layer, n_kv=N_HEAD, layer_norm=True)
    _outputs(w, norm_bias=True)
    _blocks(w, n_layer, _qkv(N_HEAD) + _ln("attn_norm", "ffn_norm") + _gated())
    _finish(w)
    return path


def xverse(path: Path) -> Path:
    """XVERSE (src/models/xverse.cpp): a Llama block, MHA."""
    return _llama_like(path, "xverse", n_kv=N_HEAD)


def baichuan(path: Path) -> Path:
    """Baichuan 2 7B (src/models/baichuan.cpp; W_pack split by the converter): a Llama block,
    MHA (the 13B's ALiBi needs its 40 layers)."""
    return _llama_like(path, "baichuan", n_kv=N_HEAD)


def codeshell(path: Path, n_layer: int = 4) -> Path:
    """CodeShell 7B (src/models/codeshell.cpp): LayerNorm with biases, biased Q/K/V/O, a biased
    GELU feed-forward, GQA."""
    w = _begin(path, "codeshell", n_layer, layer_norm=True)
    _outputs(w, norm_bias=True)
    _blocks(w, n_layer, _qkv(bias=True, out_bias=True)
            + _ln("attn_norm", "ffn_norm") + _plain(bias=True))  # fmt: skip
    _finish(w)
    return path


def bitnet(path: Path, n_layer: int = 4) -> Path:
    """BitNet b1.58 (src/models/bitnet.cpp): sub-norms inside attention and the feed-forward
    (ffn_sub_norm feed_forward_length wide), per-matrix scales, the output read from token_embd
    directly (no output tensor at all). f32 here; real files are I2_S/TQ*."""
    w = _begin(path, "bitnet", n_layer)
    _tensor(w, "token_embd.weight", E, V)
    _tensor(w, "output_norm.weight", E)
    mats = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_down", "ffn_up")
    _blocks(w, n_layer, _qkv() + _norm("attn_norm") + _norm("attn_sub_norm") + _norm("ffn_norm")
            + [("ffn_sub_norm.weight", (FF,))] + _gated()
            + [(f"{m}.scale", (1,)) for m in mats])  # fmt: skip
    _finish(w)
    return path


BUILDERS: list[Builder] = [
    command_r, starcoder2, stablelm, stablelm_parallel, internlm2, exaone, minicpm3, chatglm,
    glm4, openelm, gpt2, gptneox, mpt, bloom, falcon, phi2, gemma, deci, plm, apertus, arcee,
    ernie4_5, hunyuan_dense, jais, starcoder, refact, nemotron, olmo, orion, xverse, baichuan,
    codeshell, bitnet,
]  # fmt: skip


# --- the checks ---------------------------------------------------------------------------------


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
        """KV and RS to the log's 0.01 MiB, the weights within 0.02 MiB, compute never under."""
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

    facts = facts_from_gguf(path)
    arch = facts.arch
    s = FitSettings(ctx=ctx, parallel=slots, flash_attention=fa)
    # the server is run as deployer renders it: without flash attention where the plan turns
    # it off (PLM's graph aborts with it), while the plan is asked with -fa as given
    served_fa = as_run(arch, s).flash_attention
    run = run_server(path, ["-c", str(ctx), "-np", str(slots), "-fa", "on" if served_fa else "off",
                            "--fit", "off", "-t", "2"])  # fmt: skip
    logged = parse_buffers(run.log.split("loaded meta data")[-1])
    layers = range(arch.n_layer)
    host = estimate_memory(facts, s, _CPU).host
    return Measured(
        kv=(logged.get("host", "KV"), kv_bytes(arch, layers, s)),
        rs=(logged.get("host", "RS"), recurrent_bytes(arch, layers, s)),
        weights=(logged.get("host", "model"), host.logged_weights_bytes),
        compute=(logged.get("host", "compute"), compute_bytes(arch, s)),
    )


SETTINGS = [(8192, 2, True), (4096, 1, False), (8192, 16, True)]


# llama_model_plm's graph aborts with flash attention (on, or auto): GGML_ASSERT(a->ne[0] ==
# b->ne[0]) at -np 1, GGML_ASSERT(ggml_nelements(a) == ne0*ne1) in llama_kv_cache::cpy_v's
# merged-stream reshape at -np > 1 (its V is a 2-D view); the plan turns it off for PLM
# (memory.NO_FLASH_ATTENTION_ARCHS), and its cases run the server as rendered.
CASES = [
    pytest.param(build, ctx, slots, fa, id=f"{build.__name__}-{ctx // 1024}k-{slots}-"
                 f"{'fa' if fa else 'nofa'}")
    for build in BUILDERS for ctx, slots, fa in SETTINGS
]  # fmt: skip


@pytest.mark.parametrize(("build", "ctx", "slots", "fa"), CASES)
def test_memory_is_what_llama_server_allocates(
    tmp_path: Path, build: Builder, ctx: int, slots: int, fa: bool
) -> None:
    """KV and recurrent state (none here) to the log's precision, the mapped weights, and a
    compute buffer the plan never falls under.

    Without flash attention two families hold more beside the f32 KQ than the plan's
    3 n_embd + 3 Q-wide rows: a fused QKV whose Q is never roped (GPT-2, StarCoder, MPT, BLOOM,
    JAIS: Q stays a view of the qkv row, so its K and V columns, 2 x n_embd_k, live on to the
    KQ product; 0.48-0.98 MiB under here), and MiniCPM 3 / PLM (their per-head K concat and
    decompressed KV: 5 n_embd + 2 Q-wide rows where Q is under twice the embedding; 0.23 MiB
    under here). The plan now counts both."""
    m = measure(build(tmp_path / "m.gguf"), ctx, slots, fa)
    assert not m.mismatches(), m.line()


def test_the_plan_reads_the_per_layer_shapes(tmp_path: Path) -> None:
    """OpenELM's and DeciLM's per-layer KV heads as the loader sets them (get_key_or_arr), the
    widest feed-forward, and MiniCPM 3's / PLM's K heads wider than their V heads."""
    arch = facts_from_gguf(openelm(tmp_path / "o.gguf")).arch
    assert (arch.n_head_kv, arch.n_head, arch.n_ff) == (OPENELM_KV, max(OPENELM_HEADS), 768)
    arch = facts_from_gguf(deci(tmp_path / "d.gguf")).arch
    assert (arch.n_head_kv, arch.n_ff, arch.recurrent_layers) == (DECI_KV, 768, [])
    for build in (minicpm3, plm):
        arch = facts_from_gguf(build(tmp_path / f"{build.__name__}.gguf")).arch
        assert (arch.head_dim_k, arch.head_dim_v, arch.mla) == (96, 64, False)
