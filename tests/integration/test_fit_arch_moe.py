"""The plan's KV cache, weights and compute buffer against a real llama-server, on small
real-shaped files of popular MoE and dense architectures the fit had not been checked on:
GLM-4.5 (leading dense blocks, an MTP block), MiniMax-M2, ERNIE 4.5 MoE, Hunyuan MoE, Bailing
MoE 2 (a fused QKV, an MTP block), Qwen3-VL and its MoE (text part, deepstack inputs), Granite,
OLMo 2 / OLMo 3 (a sliding window), Seed-OSS (heads wider than the embedding), SmolLM3,
PhiMoE, dots.llm1, AFMoE (a window) and the BERT-style embedding models (no KV cache at all).
Experts are 3-D `ffn_*_exps` tensors; a Q4_0 variant exercises the CPU backend's repacking of
them. Weights are zeros; the buffers llama-server logs are what is checked."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from gguf import GGUFWriter

from deployer.adapters.gguf_files import facts_from_gguf
from deployer.core.fit.llamalog import LoggedBuffers, parse_buffers
from deployer.core.fit.memory import (
    FitSettings,
    MachineSpec,
    compute_bytes,
    estimate_memory,
    kv_bytes,
    recurrent_bytes,
)
from deployer.core.model.facts import ModelFacts
from deployer.core.units import MIB
from tests.integration.test_fit_architectures import FF, E, V, _q4, _start, _tensor
from tests.integration.test_fit_architectures import _finish as _write

pytestmark = [pytest.mark.llama_server, pytest.mark.usefixtures("llama_server_prefix")]

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

N_HEAD, N_KV, HEAD = 4, 2, 64  # attention of the small files: 4 query heads of 64, 2 KV heads
N_EXP, N_USED, FF_EXP = 4, 2, 128  # experts: 4, 2 routed a token, each 128 wide
Builder = Callable[..., Path]


def _finish(w: GGUFWriter) -> None:
    """Write the file with its tensors in llama-quantize's order, as every quantized GGUF has
    them (llama_model_loader::weights_map, weight_name_comparer): the tensors outside blocks
    first, then block by block (an MTP block last), by name within each. The order decides
    what a mapped load logs: CPU_Mapped spans the mapped tensors' first to last byte."""

    def key(name: str) -> tuple[int, str]:
        m = re.match(r"blk\.(\d+)\.", name)
        return (int(m.group(1)) if m else -1, name)

    w.tensors[0] = dict(sorted(w.tensors[0].items(), key=lambda kv: key(kv[0])))
    _write(w)


def _put(w: GGUFWriter, prefix: str, specs: tuple[tuple[str, tuple[int, ...]], ...]) -> None:
    for name, shape in specs:
        _tensor(w, prefix + name, *shape)


def _experts(
    w: GGUFWriter, p: str, ff: int, *, q4: bool, shared: int = 0, bias: bool = False
) -> None:
    """A routed MoE feed-forward: the router, 3-D expert stacks (Q4_0 when `q4`), and
    optionally `shared` shared-expert widths and the router's expert bias."""
    _tensor(w, p + "ffn_gate_inp.weight", E, N_EXP)
    if bias:
        _tensor(w, p + "exp_probs_b.bias", N_EXP)
    put = _q4 if q4 else _tensor
    put(w, p + "ffn_gate_exps.weight", E, ff, N_EXP)
    put(w, p + "ffn_down_exps.weight", ff, E, N_EXP)
    put(w, p + "ffn_up_exps.weight", E, ff, N_EXP)
    if shared:
        _tensor(w, p + "ffn_gate_shexp.weight", E, shared)
        _tensor(w, p + "ffn_down_shexp.weight", shared, E)
        _tensor(w, p + "ffn_up_shexp.weight", E, shared)


def _dense_ffn(w: GGUFWriter, p: str, ff: int = FF) -> None:
    _put(w, p, (("ffn_gate.weight", (E, ff)), ("ffn_down.weight", (ff, E)),
                ("ffn_up.weight", (E, ff))))  # fmt: skip


def _qkv(w: GGUFWriter, p: str, n_head: int = N_HEAD, n_kv: int = N_KV, head: int = HEAD,
         *, bias: bool = False) -> None:  # fmt: skip
    """Separate Q, K, V projections and the output projection."""
    _put(w, p, (("attn_q.weight", (E, n_head * head)), ("attn_k.weight", (E, n_kv * head)),
                ("attn_v.weight", (E, n_kv * head)),
                ("attn_output.weight", (n_head * head, E))))  # fmt: skip
    if bias:
        _put(w, p, (("attn_q.bias", (n_head * head,)), ("attn_k.bias", (n_kv * head,)),
                    ("attn_v.bias", (n_kv * head,))))  # fmt: skip


def _keys(n_layer: int, **extra: int) -> dict[str, int]:
    return {
        "block_count": n_layer, "embedding_length": E, "context_length": 32768,
        "feed_forward_length": FF, "attention.head_count": N_HEAD,
        "attention.head_count_kv": N_KV, "attention.key_length": HEAD,
        "attention.value_length": HEAD, "rope.dimension_count": HEAD,
    } | extra  # fmt: skip


def _output(w: GGUFWriter, *, tied: bool = False) -> None:
    _tensor(w, "token_embd.weight", E, V)
    _tensor(w, "output_norm.weight", E)
    if not tied:
        _tensor(w, "output.weight", E, V)


# --- the builders (src/models/<arch>.cpp: load_arch_hparams and load_arch_tensors) -----------


def glm4moe(path: Path, n_layer: int = 4, *, q4: bool = False, converted: bool = False) -> Path:
    """GLM-4.5 (src/models/glm4-moe.cpp): a leading dense block, then MoE blocks with a shared
    expert and an expert bias; biased Q/K/V; the last block an MTP (nextn) block, skipped.
    `converted`: in the checkpoint's order, as convert_hf_to_gguf writes an unquantized file
    (lm_head, embed_tokens, the layers, the MTP one among them, then the final norm)."""
    w = _start(path, "glm4moe", _keys(
        n_layer, **{"rope.dimension_count": HEAD // 2, "expert_feed_forward_length": FF_EXP,
                    "expert_shared_count": 1, "leading_dense_block_count": 1,
                    "expert_count": N_EXP, "expert_used_count": N_USED,
                    "nextn_predict_layers": 1, "expert_gating_func": 2}))  # fmt: skip
    w.add_float32("glm4moe.expert_weights_scale", 1.0)
    w.add_bool("glm4moe.expert_weights_norm", True)
    if converted:
        _tensor(w, "output.weight", E, V)
        _tensor(w, "token_embd.weight", E, V)
    else:
        _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _put(w, p, (("attn_norm.weight", (E,)), ("attn_q_norm.weight", (HEAD,)),
                    ("attn_k_norm.weight", (HEAD,)), ("post_attention_norm.weight", (E,))))  # fmt: skip
        _qkv(w, p, bias=True)
        if il == 0:
            _dense_ffn(w, p)
        else:
            _experts(w, p, FF_EXP, q4=q4, shared=FF_EXP, bias=True)
        if il == n_layer - 1:
            _put(w, p, (("nextn.eh_proj.weight", (2 * E, E)), ("nextn.enorm.weight", (E,)),
                        ("nextn.hnorm.weight", (E,)), ("nextn.shared_head_norm.weight", (E,))))  # fmt: skip
    if converted:
        _tensor(w, "output_norm.weight", E)
        _write(w)
    else:
        _finish(w)
    return path


def minimax_m2(path: Path, n_layer: int = 3) -> Path:
    """MiniMax-M2 (src/models/minimax-m2.cpp): every block MoE, the experts feed_forward_length
    wide; Q/K norms over all heads; partial rope; an expert bias."""
    w = _start(path, "minimax-m2", _keys(
        n_layer, **{"feed_forward_length": FF_EXP, "expert_feed_forward_length": FF_EXP,
                    "rope.dimension_count": HEAD // 2, "expert_count": N_EXP,
                    "expert_used_count": N_USED, "expert_gating_func": 2}))  # fmt: skip
    _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p)
        _put(w, p, (("attn_norm.weight", (E,)), ("attn_q_norm.weight", (N_HEAD * HEAD,)),
                    ("attn_k_norm.weight", (N_KV * HEAD,)), ("ffn_norm.weight", (E,))))  # fmt: skip
        _experts(w, p, FF_EXP, q4=False, bias=True)
    _finish(w)
    return path


def ernie4_5_moe(path: Path, n_layer: int = 3, *, dense_ff: int = FF,
                 shared: int = 2 * FF_EXP) -> Path:  # fmt: skip
    """ERNIE 4.5 MoE (src/models/ernie4-5.cpp): a leading dense block `dense_ff` wide, MoE
    blocks with a shared expert of its own width (expert_shared_feed_forward_length)."""
    w = _start(path, "ernie4_5-moe", _keys(
        n_layer, **{"feed_forward_length": dense_ff, "expert_feed_forward_length": FF_EXP,
                    "expert_count": N_EXP, "expert_used_count": N_USED,
                    "expert_shared_feed_forward_length": shared,
                    "interleave_moe_layer_step": 1, "leading_dense_block_count": 1}))  # fmt: skip
    _output(w, tied=True)  # ERNIE 4.5 21B-A3B ties its embeddings
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p)
        _put(w, p, (("attn_norm.weight", (E,)), ("ffn_norm.weight", (E,))))
        if il == 0:
            _dense_ffn(w, p, dense_ff)
        else:
            _experts(w, p, FF_EXP, q4=False, shared=shared, bias=True)
    _finish(w)
    return path


def hunyuan_moe(path: Path, n_layer: int = 3) -> Path:
    """Hunyuan-A13B (src/models/hunyuan-moe.cpp): every block MoE with a shared expert; the
    experts are feed_forward_length wide; Q/K norms."""
    w = _start(path, "hunyuan-moe", _keys(
        n_layer, **{"feed_forward_length": FF_EXP, "expert_feed_forward_length": FF_EXP,
                    "expert_shared_feed_forward_length": FF_EXP, "expert_count": N_EXP,
                    "expert_used_count": N_USED}))  # fmt: skip
    _output(w, tied=True)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p)
        _put(w, p, (("attn_norm.weight", (E,)), ("attn_q_norm.weight", (HEAD,)),
                    ("attn_k_norm.weight", (HEAD,)), ("ffn_norm.weight", (E,))))  # fmt: skip
        _experts(w, p, FF_EXP, q4=False, shared=FF_EXP)
    _finish(w)
    return path


def bailingmoe2(path: Path, n_layer: int = 4) -> Path:
    """Ling/Ring 2.0 (src/models/bailingmoe2.cpp): a fused QKV, a leading dense block, MoE blocks
    with a shared expert, and the last block an MTP block, skipped."""
    w = _start(path, "bailingmoe2", _keys(
        n_layer, **{"rope.dimension_count": HEAD // 2, "expert_feed_forward_length": FF_EXP,
                    "expert_shared_count": 1, "leading_dense_block_count": 1,
                    "expert_count": N_EXP, "expert_used_count": N_USED,
                    "nextn_predict_layers": 1, "expert_gating_func": 2}))  # fmt: skip
    w.add_float32("bailingmoe2.expert_weights_scale", 2.5)
    w.add_bool("bailingmoe2.expert_weights_norm", True)
    _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _put(w, p, (("attn_norm.weight", (E,)), ("attn_qkv.weight", (E, E + 2 * N_KV * HEAD)),
                    ("attn_output.weight", (N_HEAD * HEAD, E)), ("attn_q_norm.weight", (HEAD,)),
                    ("attn_k_norm.weight", (HEAD,)), ("ffn_norm.weight", (E,))))  # fmt: skip
        if il == 0:
            _dense_ffn(w, p)
        else:
            _experts(w, p, FF_EXP, q4=False, shared=FF_EXP, bias=True)
        if il == n_layer - 1:
            _put(w, p, (("nextn.eh_proj.weight", (2 * E, E)), ("nextn.enorm.weight", (E,)),
                        ("nextn.hnorm.weight", (E,)), ("layer_output_norm.weight", (E,))))  # fmt: skip
    _finish(w)
    return path


def _qwen3vl(path: Path, arch: str, n_layer: int, *, q4: bool = False) -> Path:
    """Qwen3-VL's text model (src/models/qwen3vl.cpp, qwen3vlmoe.cpp): Qwen3 blocks with an
    M-RoPE and 3 deepstack layers, whose vision rows widen the input embedding 4 times."""
    extra = {"n_deepstack_layers": 3}
    if arch == "qwen3vlmoe":
        extra |= {"expert_feed_forward_length": FF_EXP, "expert_count": N_EXP,
                  "expert_used_count": N_USED}  # fmt: skip
    w = _start(path, arch, _keys(n_layer, **extra))
    w.add_array(f"{arch}.rope.dimension_sections", [11, 11, 10, 0])
    _output(w, tied=arch == "qwen3vl")  # the small Qwen3-VL models tie their embeddings
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p)
        _put(w, p, (("attn_norm.weight", (E,)), ("attn_q_norm.weight", (HEAD,)),
                    ("attn_k_norm.weight", (HEAD,)), ("ffn_norm.weight", (E,))))  # fmt: skip
        if arch == "qwen3vlmoe":
            _experts(w, p, FF_EXP, q4=q4)
        else:
            _dense_ffn(w, p)
    _finish(w)
    return path


def qwen3vl(path: Path) -> Path:
    return _qwen3vl(path, "qwen3vl", 4)  # the deepstack layers must come before the last


def qwen3vlmoe(path: Path, *, q4: bool = False) -> Path:
    return _qwen3vl(path, "qwen3vlmoe", 4, q4=q4)


def _llama_like(w: GGUFWriter, n_layer: int) -> None:
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p)
        _put(w, p, (("attn_norm.weight", (E,)), ("ffn_norm.weight", (E,))))
        _dense_ffn(w, p)


def granite(path: Path, n_layer: int = 3) -> Path:
    """Granite 3 dense (src/models/granite.cpp): Llama blocks, a logit scale (required), tied."""
    w = _start(path, "granite", _keys(n_layer, vocab_size=V))
    for key, value in (("logit_scale", 8.0), ("residual_multiplier", 0.22),
                       ("embedding_scale", 12.0), ("attention.scale", 0.0078125)):  # fmt: skip
        w.add_float32(f"granite.{key}", value)
    _output(w, tied=True)
    _llama_like(w, n_layer)
    _finish(w)
    return path


def _olmo2(path: Path, n_layer: int, window: int) -> Path:
    """OLMo 2 (src/models/olmo2.cpp): post-norms, Q/K norms over all heads; with a window
    (OLMo 3) three of four layers slide."""
    extra = {"attention.sliding_window": window} if window else {}
    w = _start(path, "olmo2", _keys(n_layer, **extra))
    _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p)
        _put(w, p, (("attn_q_norm.weight", (E,)), ("attn_k_norm.weight", (N_KV * HEAD,)),
                    ("post_attention_norm.weight", (E,)), ("post_ffw_norm.weight", (E,))))  # fmt: skip
        _dense_ffn(w, p)
    _finish(w)
    return path


def olmo2(path: Path) -> Path:
    return _olmo2(path, 4, 0)


def olmo3(path: Path) -> Path:
    return _olmo2(path, 4, 512)


def seed_oss(path: Path, n_layer: int = 3) -> Path:
    """Seed-OSS (src/models/seed-oss.cpp): 128-wide heads, so Q is twice the embedding;
    biased Q/K/V; a post-attention norm in place of the feed-forward one."""
    head = 128
    w = _start(path, "seed_oss", _keys(
        n_layer, **{"attention.key_length": head, "attention.value_length": head,
                    "rope.dimension_count": head}))  # fmt: skip
    _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p, head=head, bias=True)
        _put(w, p, (("attn_norm.weight", (E,)), ("post_attention_norm.weight", (E,))))
        _dense_ffn(w, p)
    _finish(w)
    return path


def smollm3(path: Path, n_layer: int = 4) -> Path:
    """SmolLM3 (src/models/smollm3.cpp): Llama blocks, every 4th without rope; tied."""
    w = _start(path, "smollm3", _keys(n_layer))
    _output(w, tied=True)
    _llama_like(w, n_layer)
    _finish(w)
    return path


def phimoe(path: Path, n_layer: int = 3) -> Path:
    """Phi-3.5-MoE (src/models/phimoe.cpp): layer norms with biases, biased output, every block
    MoE with feed_forward_length-wide experts, LongRoPE factors."""
    w = _start(path, "phimoe", _keys(
        n_layer, **{"feed_forward_length": FF_EXP, "expert_count": N_EXP,
                    "expert_used_count": N_USED}))  # fmt: skip
    _output(w)
    _tensor(w, "output_norm.bias", E)
    _tensor(w, "output.bias", V)
    _tensor(w, "rope_factors_long.weight", HEAD // 2)
    _tensor(w, "rope_factors_short.weight", HEAD // 2)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p, bias=True)
        _put(w, p, (("attn_norm.weight", (E,)), ("attn_norm.bias", (E,)),
                    ("attn_output.bias", (E,)), ("ffn_norm.weight", (E,)),
                    ("ffn_norm.bias", (E,))))  # fmt: skip
        _experts(w, p, FF_EXP, q4=False)
    _finish(w)
    return path


def dots1(path: Path, n_layer: int = 3) -> Path:
    """dots.llm1 (src/models/dots1.cpp): as many KV heads as query heads (the loader sizes K and
    V as Q), a leading dense block, MoE blocks with a shared expert."""
    w = _start(path, "dots1", _keys(
        n_layer, **{"attention.head_count_kv": N_HEAD, "expert_feed_forward_length": FF_EXP,
                    "expert_shared_count": 1, "leading_dense_block_count": 1,
                    "expert_count": N_EXP, "expert_used_count": N_USED,
                    "expert_gating_func": 2}))  # fmt: skip
    _output(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p, n_kv=N_HEAD)
        _put(w, p, (("attn_norm.weight", (E,)), ("attn_q_norm.weight", (HEAD,)),
                    ("attn_k_norm.weight", (HEAD,)), ("ffn_norm.weight", (E,))))  # fmt: skip
        if il == 0:
            _dense_ffn(w, p)
        else:
            _experts(w, p, FF_EXP, q4=False, shared=FF_EXP, bias=True)
    _finish(w)
    return path


def afmoe(path: Path, n_layer: int = 4) -> Path:
    """Arcee AFMoE / Trinity (src/models/afmoe.cpp): a 512-token window on three of four layers,
    gated attention, a leading dense block, MoE blocks with a shared expert."""
    w = _start(path, "afmoe", _keys(
        n_layer, **{"expert_feed_forward_length": FF_EXP, "expert_shared_count": 1,
                    "leading_dense_block_count": 1, "expert_count": N_EXP,
                    "expert_used_count": N_USED, "attention.sliding_window": 512}))  # fmt: skip
    _output(w, tied=True)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p)
        _put(w, p, (("attn_norm.weight", (E,)), ("post_attention_norm.weight", (E,)),
                    ("attn_q_norm.weight", (HEAD,)), ("attn_k_norm.weight", (HEAD,)),
                    ("attn_gate.weight", (E, N_HEAD * HEAD)), ("ffn_norm.weight", (E,)),
                    ("post_ffw_norm.weight", (E,))))  # fmt: skip
        if il == 0:
            _dense_ffn(w, p)
        else:
            _experts(w, p, FF_EXP, q4=False, shared=FF_EXP, bias=True)
    _finish(w)
    return path


def _bert(path: Path, arch: str, n_layer: int = 3) -> Path:
    """BERT and Nomic BERT (src/models/bert.cpp, nomic-bert.cpp): encoders with layer norms and
    biases, token types; BERT learns its positions, Nomic ropes and gates its feed-forward.
    An embedding model: llama.cpp gives it no memory (create_memory: nullptr)."""
    ctx_train = 512
    keys = _keys(n_layer, context_length=ctx_train, **{"attention.head_count_kv": N_HEAD})
    w = _start(path, arch, keys)
    w.add_float32(f"{arch}.attention.layer_norm_epsilon", 1e-12)
    w.add_bool(f"{arch}.attention.causal", False)
    w.add_uint32(f"{arch}.pooling_type", 2 if arch == "bert" else 1)
    w.add_uint32("tokenizer.ggml.token_type_count", 2)
    _tensor(w, "token_embd.weight", E, V)
    _tensor(w, "token_types.weight", E, 2)
    _tensor(w, "token_embd_norm.weight", E)
    _tensor(w, "token_embd_norm.bias", E)
    if arch == "bert":
        _tensor(w, "position_embd.weight", E, ctx_train)
    for il in range(n_layer):
        p = f"blk.{il}."
        _qkv(w, p, n_kv=N_HEAD, bias=True)
        _put(w, p, (("attn_output.bias", (E,)), ("attn_output_norm.weight", (E,)),
                    ("attn_output_norm.bias", (E,)), ("ffn_up.weight", (E, FF)),
                    ("ffn_up.bias", (FF,)), ("ffn_down.weight", (FF, E)),
                    ("ffn_down.bias", (E,)), ("layer_output_norm.weight", (E,)),
                    ("layer_output_norm.bias", (E,))))  # fmt: skip
        if arch == "nomic-bert":
            _tensor(w, p + "ffn_gate.weight", E, FF)
    _finish(w)
    return path


def bert(path: Path) -> Path:
    return _bert(path, "bert")


def nomic_bert(path: Path) -> Path:
    return _bert(path, "nomic-bert")


GENERATIVE: list[Builder] = [
    glm4moe, minimax_m2, ernie4_5_moe, hunyuan_moe, bailingmoe2, qwen3vl, qwen3vlmoe, granite,
    olmo2, olmo3, seed_oss, smollm3, phimoe, dots1, afmoe,
]  # fmt: skip
EMBEDDING: list[Builder] = [bert, nomic_bert]

CPU = MachineSpec(kind="cpu", device_count=0, device_budget_bytes=0, device_overhead_bytes=0,
                  host_budget_bytes=2**34, cpu_threads=2)  # fmt: skip


def _serve(path: Path, ctx: int, slots: int, fa: bool, mode: str = "mmap",
           extra: tuple[str, ...] = ()) -> LoggedBuffers:  # fmt: skip
    from _llama import run_server

    run = run_server(path, ["-c", str(ctx), "-np", str(slots), "-fa", "on" if fa else "off",
                            "-lm", mode, "--fit", "off", "-t", "2", *extra])  # fmt: skip
    return parse_buffers(run.log.split("loaded meta data")[-1])


def _plan_weights(facts: ModelFacts, s: FitSettings) -> int:
    return estimate_memory(facts, s, CPU).host.logged_weights_bytes


def _check(path: Path, logged: LoggedBuffers, s: FitSettings) -> tuple[ModelFacts, int]:
    """KV and RS to 0.01 MiB, the mapped weights to 0.02 MiB; the plan's compute buffer."""
    facts = facts_from_gguf(path)
    arch = facts.arch
    assert abs(kv_bytes(arch, range(arch.n_layer), s) - logged.get("host", "KV")) <= 0.01 * MIB
    assert (
        abs(recurrent_bytes(arch, range(arch.n_layer), s) - logged.get("host", "RS")) <= 0.01 * MIB
    )
    assert abs(_plan_weights(facts, s) - logged.get("host", "model")) <= 0.02 * MIB
    return facts, compute_bytes(arch, s)


SETTINGS = [(8192, 2, True), (4096, 1, False)]


@pytest.mark.parametrize("build", GENERATIVE, ids=lambda f: f.__name__)
@pytest.mark.parametrize(("ctx", "slots", "fa"), SETTINGS)
def test_cache_weights_and_compute_are_what_llama_server_allocates(
    tmp_path: Path, build: Builder, ctx: int, slots: int, fa: bool
) -> None:
    """KV (windowed layers at their window, an MTP block left out), no recurrent state, the
    mapped weights (an MTP block's skipped), and a compute buffer the plan never falls under:
    Qwen3-VL's deepstack inputs widen the input rows (1 + 3) x n_embd, and Ling 2's and AFMoE's
    leading dense blocks are wider than their routed experts (the plan had been 0.5-7.5 MiB
    under on these files)."""
    path = build(tmp_path / "m.gguf")
    logged = _serve(path, ctx, slots, fa)
    s = FitSettings(ctx=ctx, parallel=slots, flash_attention=fa)
    facts, compute = _check(path, logged, s)
    assert logged.get("host", "compute") <= compute
    arch = facts.arch
    if build in (glm4moe, bailingmoe2):
        assert arch.nextn_layers == 1 and facts.weights.block_bytes[-1] <= 4 * N_EXP
        assert kv_bytes(arch, [arch.n_layer - 1], s) == 0
    if build in (olmo3, afmoe):
        assert arch.swa_layers == [True, True, True, False]


@pytest.mark.parametrize("build", EMBEDDING, ids=lambda f: f.__name__)
@pytest.mark.parametrize(("ctx", "slots", "fa"), SETTINGS)
def test_an_embedding_model_has_no_cache(
    tmp_path: Path, build: Builder, ctx: int, slots: int, fa: bool
) -> None:
    """BERT-style encoders get no memory at all (llama_model::create_memory: nullptr for bert,
    nomic-bert, jina-bert, modern-bert, gemma-embedding, ...): no KV whatever the context.
    Served with --embedding (without it llama-server aborts at -np 1: GGML_ASSERT(n_outputs_max
    <= cparams.n_outputs_max)). The plan had given them a full KV cache (24 MiB at ctx 8192)."""
    path = build(tmp_path / "m.gguf")
    logged = _serve(path, ctx, slots, fa, extra=("--embedding",))
    s = FitSettings(ctx=ctx, parallel=slots, flash_attention=fa)
    assert logged.get("host", "KV") == 0
    _, compute = _check(path, logged, s)
    assert logged.get("host", "compute") <= compute


@pytest.mark.parametrize(
    ("dense_ff", "shared"), [(4 * FF, FF_EXP), (FF_EXP, 8 * FF_EXP)], ids=["dense", "shared"]
)
def test_the_widest_feed_forward_bounds_the_compute_buffer(
    tmp_path: Path, dense_ff: int, shared: int
) -> None:
    """An MoE's feed-forward half is as wide as its widest feed-forward: a leading dense block
    (feed_forward_length) or the shared expert (expert_shared_feed_forward_length) where wider
    than the routed experts (expert_feed_forward_length x expert_used_count): llama.cpp's
    allocator holds three of those rows beside five n_embd-wide ones, as in a dense model.
    (The plan had sized an MoE's feed-forward by its routed experts alone: 9.00 MiB planned,
    18.52 MiB logged for a 2048-wide dense block, 12.52 MiB for a 1024-wide shared expert.)"""
    path = ernie4_5_moe(tmp_path / "m.gguf", dense_ff=dense_ff, shared=shared)
    logged = _serve(path, 8192, 2, True)
    s = FitSettings(ctx=8192, parallel=2, flash_attention=True)
    _, compute = _check(path, logged, s)
    assert logged.get("host", "compute") <= compute


# The plan's logged CPU_Mapped counts tensors, not the mapping's span (a known gap in the
# logged figure only; what is resident does not change).
_SPAN = pytest.mark.xfail(strict=True, reason="the logged mapping is a span, not a tensor sum")


@pytest.mark.parametrize(
    ("build", "mode"),
    [(glm4moe, "mmap"), (glm4moe, "none"), pytest.param(qwen3vlmoe, "mmap", marks=_SPAN),
     (qwen3vlmoe, "none")],
)  # fmt: skip
def test_repacked_expert_stacks_are_counted(tmp_path: Path, build: Builder, mode: str) -> None:
    """Q4_0 expert stacks (3-D, MUL_MAT_ID) move into CPU_REPACK. Read into memory (-lm none)
    the CPU and CPU_REPACK buffers hold each tensor once. Mapped, CPU_Mapped is the span from
    the first to the last byte of the tensors left in the mapping (llama_model_loader::
    get_mapping_range), so a repacked tensor inside it is logged twice and one at either end
    of the file once (in CPU_REPACK only).

    The plan's logged figure counts tensors, not the mapping's span: qwen3vlmoe mapped, whose
    last tensor (blk.3.ffn_up_exps, in llama-quantize's order) is a repacked one, is logged
    once where the plan counts it twice (0.07 MiB over). Resident memory is not affected (the
    pages of a mapped, repacked tensor are read once and reclaimable)."""
    path = build(tmp_path / "m.gguf", q4=True)
    logged = _serve(path, 4096, 1, True, mode)
    facts = facts_from_gguf(path)
    assert sum(facts.weights.cpu_repack_bytes) > 0 and logged.buffers.get(("host", "model"))
    s = FitSettings(ctx=4096, load_mode=mode)
    assert abs(_plan_weights(facts, s) - logged.get("host", "model")) <= 0.02 * MIB


@pytest.mark.parametrize("mode", [pytest.param("mmap", marks=_SPAN), "none"])
def test_a_skipped_mtp_block_inside_the_mapping_is_logged(tmp_path: Path, mode: str) -> None:
    """An MTP block llama.cpp skips (TENSOR_SKIP) takes no buffer read into memory; mapped,
    CPU_Mapped still spans it where it lies between mapped tensors (a converted, unquantized
    file in the checkpoint's order: the final norm after it). The pages are never touched:
    what is resident is unchanged, only the logged buffer.

    Known, mapped: the plan's logged figure leaves the block out (3.14 MiB under the log)."""
    path = glm4moe(tmp_path / "m.gguf", converted=True)
    logged = _serve(path, 4096, 1, True, mode)
    facts = facts_from_gguf(path)
    assert facts.arch.nextn_layers == 1
    s = FitSettings(ctx=4096, load_mode=mode)
    assert abs(_plan_weights(facts, s) - logged.get("host", "model")) <= 0.02 * MIB


@pytest.mark.parametrize("build", [ernie4_5_moe, hunyuan_moe, qwen3vl, granite, smollm3, afmoe,
                                   bert], ids=lambda f: f.__name__)  # fmt: skip
def test_tied_files_count_every_tensor_outside_the_blocks(tmp_path: Path, build: Builder) -> None:
    """With tied embeddings the tensors beside token_embd outside the blocks (output_norm,
    BERT's token_embd_norm, rope factors) are still loaded: every tensor of a file without an
    MTP block is in llama.cpp's buffers. Below the log's 0.01 MiB here (n_embd x 4 bytes each),
    so checked against the file's tensor table. (WeightLayout.tensor_bytes had left them out
    when the output was tied.)"""
    from gguf import GGUFReader

    path = build(tmp_path / "m.gguf")
    facts = facts_from_gguf(path)
    assert facts.arch.tied_embeddings
    in_file = sum(int(t.n_bytes) for t in GGUFReader(path).tensors)
    assert facts.weights.tensor_bytes == in_file


@pytest.mark.parametrize("build", [glm4moe, bailingmoe2], ids=lambda f: f.__name__)
def test_an_mtp_blocks_expert_bias_is_skipped_too(tmp_path: Path, build: Builder) -> None:
    """GLM-4.5's and Bailing MoE 2's loaders give every tensor of the MTP block TENSOR_SKIP,
    the expert bias (exp_probs_b) included: nothing of the block is loaded (only DeepSeek 3.2's
    and GLM-5's loaders create it without the skip flag)."""
    from _llama import run_server

    path = build(tmp_path / "m.gguf")
    run = run_server(path, ["-c", "4096", "--fit", "off", "-t", "2"])
    assert "unused tensor blk.3.exp_probs_b.bias" in run.log
    assert facts_from_gguf(path).weights.block_bytes[3] == 0
