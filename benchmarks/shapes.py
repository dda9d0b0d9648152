"""Real public model shapes as sparse GGUF files, for memory benchmarks without the weights.

Each entry names a public model (its Hugging Face config is the source), its architecture's
GGUF keys as llama.cpp's converter writes them, the real vocabulary size, and the tensor table
with llama.cpp's names and shapes. Quantized entries take the per-tensor types llama.cpp's
quantizer picks for that file type (src/llama-quant.cpp, llama_tensor_get_type). The file holds
the header only: the weights are a hole, so an 8B model costs a few MB on disk, and
llama-server loads it, allocates what the real model needs and answers (with noise tokens).

    python benchmarks/shapes.py [--out DIR] [NAME...]        # build, print name, arch, size
    python benchmarks/shapes.py --list

Importable: `sys.path.insert(0, "benchmarks")`, then `from shapes import SHAPES, build`.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType, GGUFWriter, TokenType
from gguf.quants import quant_shape_to_byte_shape

DEFAULT_OUT = Path.home() / ".cache" / "deployer-bench" / "shapes"
ALIGNMENT = 32  # GGUFWriter's default general.alignment
FILE_TYPE = {"F16": 1, "Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18}  # llama_ftype
BYTE_TOKENS_AT = 1000  # <0x00>..<0xFF> live here: no entry has a special token in 1000..1255
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

KeyValue = int | float | str | bool


@dataclass(frozen=True)
class TensorSpec:
    """One tensor-table entry: name, ggml type name, shape with ne0 first (as llama.cpp)."""

    name: str
    ggml_type: str
    shape: tuple[int, ...]

    @property
    def n_bytes(self) -> int:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[self.ggml_type]]
        n = 1
        for d in self.shape:
            n *= d
        return n // block * size


@dataclass(frozen=True)
class Layout:
    """How an architecture lays out a block (src/models/<arch>.cpp, load_arch_tensors)."""

    qkv_bias: bool = False
    qk_norm: str = ""  # "head": [head_dim] per block; "full": [n_embd] / [n_embd_k_gqa]
    post_norms: bool = False  # Gemma 2/3: post_attention_norm, post_ffw_norm
    fused: bool = False  # Phi-3: attn_qkv and ffn_up holding gate and up
    moe: bool = False
    always_tied: bool = False  # Gemma: no output.weight at all
    # Qwen3.5 (src/models/qwen35.cpp): every Nth layer gated attention (its Q projection twice
    # as wide, the gate's half), the others gated delta nets; norms before and after attention
    delta_net: bool = False
    # DeepSeek 2 (src/models/deepseek2.cpp): MLA attention (a compressed KV and its rope part,
    # K and V decompressed per head by attn_k_b/attn_v_b), routed and shared experts after
    # leading dense blocks
    mla: bool = False
    # LayerNorm with a bias on every norm (StarCoder 2); a bias on the attention output; a
    # plain feed-forward (up and down, each biased, no gate); no feed-forward norm (Command R:
    # attention and feed-forward in parallel from one norm)
    layer_norm: bool = False
    out_bias: bool = False
    plain_ffn: bool = False
    parallel: bool = False


LAYOUTS: dict[str, Layout] = {
    "llama": Layout(),
    "qwen2": Layout(qkv_bias=True),
    "qwen3": Layout(qk_norm="head"),
    "gemma2": Layout(post_norms=True, always_tied=True),
    "gemma3": Layout(qk_norm="head", post_norms=True, always_tied=True),
    "phi3": Layout(fused=True),
    "qwen3moe": Layout(qk_norm="head", moe=True),
    "olmoe": Layout(qk_norm="full", moe=True),
    "qwen35": Layout(qk_norm="head", delta_net=True),
    "deepseek2": Layout(moe=True, mla=True),
    "cohere2": Layout(parallel=True),
    "granitemoe": Layout(moe=True),
    "starcoder2": Layout(qkv_bias=True, layer_norm=True, out_bias=True, plain_ffn=True),
}


@dataclass(frozen=True)
class Shape:
    """A public model's shape: what llama.cpp reads from its GGUF, minus the weights."""

    name: str
    arch: str
    source: str  # Hugging Face repo of the config these numbers come from
    title: str  # general.name
    ftype: str  # key of FILE_TYPE
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_vocab: int
    ctx_train: int
    rope_base: float
    norm_eps: float
    tied: bool
    bos_id: int
    eos_id: int
    rope_freqs: bool = False  # Llama 3.x: rope_freqs.weight (llama3 rope scaling factors)
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_expert: int = 0  # qwen3moe's expert_feed_forward_length; OLMoE's experts use n_ff
    sliding_window: int = 0
    # The real tokenizer's BPE merges (tokenizer.ggml.merges) and pre-tokenizer; 0 for a
    # SentencePiece vocabulary. Files are built with a placeholder SPM vocabulary of the real
    # size unless asked for the BPE one (build(..., bpe=True)).
    n_merges: int = 0
    bpe_pre: str = ""
    extra: tuple[tuple[str, KeyValue], ...] = field(default=())  # more `<arch>.` keys
    # Gated delta nets: conv kernel, key head size, key heads, value heads (value head size =
    # key head size), and the attention interval; rotary dims and M-RoPE sections when partial
    delta_net: tuple[int, ...] = ()  # four numbers, or none
    full_attention_interval: int = 0
    rope_dims: int = 0
    rope_sections: tuple[int, ...] = ()
    # MLA: KV rank, Q/K head size without rope, rope size, V head size; shared experts and
    # the leading dense blocks of an MLA MoE
    mla: tuple[int, ...] = ()  # four numbers, or none
    n_expert_shared: int = 0
    n_dense_lead: int = 0

    def is_attention(self, il: int) -> bool:
        """Whether block `il` is an attention block (every block but delta-net ones)."""
        every = self.full_attention_interval
        return not every or (il + 1) % every == 0

    @property
    def layout(self) -> Layout:
        return LAYOUTS[self.arch]


# Numbers from each source's config.json; `name` says the file type, `replace` makes siblings.
LLAMA31_8B = Shape(
    name="llama3.1-8b-q4_k_m", arch="llama", source="meta-llama/Llama-3.1-8B-Instruct",
    title="Llama 3.1 8B Instruct", ftype="Q4_K_M", n_layer=32, n_embd=4096, n_ff=14336,
    n_head=32, n_head_kv=8, head_dim=128, n_vocab=128256, ctx_train=131072,
    rope_base=500000.0, norm_eps=1e-5, tied=False, bos_id=128000, eos_id=128009,
    rope_freqs=True, n_merges=280147, bpe_pre="llama-bpe",
)  # fmt: skip
MISTRAL_7B = replace(
    LLAMA31_8B, name="mistral-7b-v0.3-q4_k_m", source="mistralai/Mistral-7B-Instruct-v0.3",
    title="Mistral 7B Instruct v0.3", n_vocab=32768, ctx_train=32768, rope_base=1e6,
    bos_id=1, eos_id=2, rope_freqs=False, n_merges=0, bpe_pre="",
)  # fmt: skip
LLAMA32_1B = replace(
    LLAMA31_8B, name="llama3.2-1b-q4_k_m", source="meta-llama/Llama-3.2-1B-Instruct",
    title="Llama 3.2 1B Instruct", n_layer=16, n_embd=2048, n_ff=8192, head_dim=64, tied=True,
)  # fmt: skip
LLAMA32_3B = replace(
    LLAMA31_8B, name="llama3.2-3b-q4_k_m", source="meta-llama/Llama-3.2-3B-Instruct",
    title="Llama 3.2 3B Instruct", n_layer=28, n_embd=3072, n_ff=8192, n_head=24, tied=True,
)  # fmt: skip
QWEN25_3B = Shape(
    name="qwen2.5-3b-q4_k_m", arch="qwen2", source="Qwen/Qwen2.5-3B-Instruct",
    title="Qwen2.5 3B Instruct", ftype="Q4_K_M", n_layer=36, n_embd=2048, n_ff=11008,
    n_head=16, n_head_kv=2, head_dim=128, n_vocab=151936, ctx_train=32768, rope_base=1e6,
    norm_eps=1e-6, tied=True, bos_id=151643, eos_id=151645, n_merges=151387, bpe_pre="qwen2",
)  # fmt: skip
QWEN3_4B = Shape(
    name="qwen3-4b-q4_k_m", arch="qwen3", source="Qwen/Qwen3-4B", title="Qwen3 4B",
    ftype="Q4_K_M", n_layer=36, n_embd=2560, n_ff=9728, n_head=32, n_head_kv=8, head_dim=128,
    n_vocab=151936, ctx_train=40960, rope_base=1e6, norm_eps=1e-6, tied=True,
    bos_id=151643, eos_id=151645, n_merges=151387, bpe_pre="qwen2",
)  # fmt: skip
GEMMA2_2B = Shape(
    name="gemma2-2b-q4_k_m", arch="gemma2", source="google/gemma-2-2b-it", title="Gemma 2 2B It",
    ftype="Q4_K_M", n_layer=26, n_embd=2304, n_ff=9216, n_head=8, n_head_kv=4, head_dim=256,
    n_vocab=256000, ctx_train=8192, rope_base=10000.0, norm_eps=1e-6, tied=True, bos_id=2,
    eos_id=1, sliding_window=4096,
    extra=(("attn_logit_softcapping", 50.0), ("final_logit_softcapping", 30.0)),
)  # fmt: skip
GEMMA3_1B = Shape(
    name="gemma3-1b-q4_k_m", arch="gemma3", source="google/gemma-3-1b-it", title="Gemma 3 1B It",
    ftype="Q4_K_M", n_layer=26, n_embd=1152, n_ff=6912, n_head=4, n_head_kv=1, head_dim=256,
    n_vocab=262144, ctx_train=32768, rope_base=1e6, norm_eps=1e-6, tied=True, bos_id=2,
    eos_id=1, sliding_window=512,
)  # fmt: skip
PHI3_MINI = Shape(
    name="phi3-mini-4k-q4_k_m", arch="phi3", source="microsoft/Phi-3-mini-4k-instruct",
    title="Phi 3 Mini 4k Instruct", ftype="Q4_K_M", n_layer=32, n_embd=3072, n_ff=8192,
    n_head=32, n_head_kv=32, head_dim=96, n_vocab=32064, ctx_train=4096, rope_base=10000.0,
    norm_eps=1e-5, tied=False, bos_id=1, eos_id=32000, sliding_window=2047,
)  # fmt: skip
QWEN3_30B_A3B = Shape(
    name="qwen3-30b-a3b-q4_k_m", arch="qwen3moe", source="Qwen/Qwen3-30B-A3B",
    title="Qwen3 30B A3B", ftype="Q4_K_M", n_layer=48, n_embd=2048, n_ff=6144, n_head=32,
    n_head_kv=4, head_dim=128, n_vocab=151936, ctx_train=40960, rope_base=1e6, norm_eps=1e-6,
    tied=False, bos_id=151643, eos_id=151645, n_expert=128, n_expert_used=8, n_ff_expert=768,
    n_merges=151387, bpe_pre="qwen2",
)  # fmt: skip
OLMOE_1B_7B = Shape(
    name="olmoe-1b-7b-q4_k_m", arch="olmoe", source="allenai/OLMoE-1B-7B-0924-Instruct",
    title="OLMoE 1B 7B 0924 Instruct", ftype="Q4_K_M", n_layer=16, n_embd=2048, n_ff=1024,
    n_head=16, n_head_kv=16, head_dim=128, n_vocab=50304, ctx_train=4096, rope_base=10000.0,
    norm_eps=1e-5, tied=False, bos_id=50279, eos_id=50279, n_expert=64, n_expert_used=8,
    n_merges=50009, bpe_pre="olmo",
)  # fmt: skip

# Qwen3.5 9B: a hybrid, 8 attention blocks of 32 (gated, 16 query and 4 KV heads of 256, a
# quarter of each rotated) and 24 gated delta nets (16 key and 32 value heads of 128, a 4-wide
# convolution). Dimensions recalled from the published config, not read from it here; the
# delta-net state they give, 50.25 MiB a slot, is the RS buffer a real llama-server logged for
# this model (../shared/reference/fit_methods.md).
QWEN35_9B = Shape(
    name="qwen3.5-9b-q4_k_m", arch="qwen35", source="Qwen/Qwen3.5-9B", title="Qwen3.5 9B",
    ftype="Q4_K_M", n_layer=32, n_embd=4096, n_ff=12288, n_head=16, n_head_kv=4, head_dim=256,
    n_vocab=248320, ctx_train=262144, rope_base=1e7, norm_eps=1e-6, tied=False,
    bos_id=248044, eos_id=248046,
    delta_net=(4, 128, 16, 32), full_attention_interval=4, rope_dims=64,
    rope_sections=(11, 11, 10, 0),
)  # fmt: skip

# DeepSeek-V2-Lite: MLA (a 512-rank compressed KV and 64 rope dims cached per token, one K
# head of 576) in 27 blocks, the first dense, the rest 64 routed experts (6 used) and 2 shared;
# no Q compression (llama.cpp's "lite" layout). Dimensions recalled from the published config,
# not read from it here. Converted the current way: key_length_mla stated, so llama.cpp caches
# the latent.
DEEPSEEK_V2_LITE = Shape(
    name="deepseek-v2-lite-q4_k_m", arch="deepseek2", source="deepseek-ai/DeepSeek-V2-Lite-Chat",
    title="DeepSeek V2 Lite Chat", ftype="Q4_K_M", n_layer=27, n_embd=2048, n_ff=10944,
    n_head=16, n_head_kv=1, head_dim=576, n_vocab=102400, ctx_train=163840, rope_base=10000.0,
    norm_eps=1e-6, tied=False, bos_id=100000, eos_id=100001, n_expert=64, n_expert_used=6,
    n_ff_expert=1408, rope_dims=64, mla=(512, 128, 64, 128), n_expert_shared=2,
    n_dense_lead=1,
)  # fmt: skip

# Held out (added 2026-12-01, judged once before any change to the estimator): sizes and file
# types no earlier row had. Q5_K and Q6_K are not repacked on x86 (every weight stays mapped);
# Q4_0 is, all but token_embd. Dimensions recalled from each published config.json.
QWEN25_7B_Q5 = replace(
    QWEN25_3B, name="qwen2.5-7b-q5_k_m", source="Qwen/Qwen2.5-7B-Instruct",
    title="Qwen2.5 7B Instruct", ftype="Q5_K_M", n_layer=28, n_embd=3584, n_ff=18944,
    n_head=28, n_head_kv=4, n_vocab=152064, tied=False,
)  # fmt: skip
QWEN3_8B_Q40 = replace(
    QWEN3_4B, name="qwen3-8b-q4_0", source="Qwen/Qwen3-8B", title="Qwen3 8B", ftype="Q4_0",
    n_embd=4096, n_ff=12288, tied=False,
)  # fmt: skip
GEMMA3_4B_Q6 = replace(
    GEMMA3_1B, name="gemma3-4b-q6_k", source="google/gemma-3-4b-it", title="Gemma 3 4B It",
    ftype="Q6_K", n_layer=34, n_embd=2560, n_ff=10240, n_head=8, n_head_kv=4, n_vocab=262208,
    ctx_train=131072, sliding_window=1024,
)  # fmt: skip

# Held out, second set (added 2026-12-02, judged once before any change to the estimator):
# architectures no shape row had, each held to llama-server's log only on small files
# (tests/integration/test_fit_arch_*.py) until now. Command R7B: a 4096-token window on three
# blocks of four, so its context checkpoints are the largest of any row (24 windowed blocks);
# attention and feed-forward in parallel from one LayerNorm. Granite 3.1 3B-A800M: 40 experts, 8
# a token, each 512 wide, the Granite scales. StarCoder2 7B: LayerNorms and projections with
# biases, a plain GELU feed-forward, 36 query heads and 4 KV heads (its config's window,
# which llama.cpp's starcoder2 loader does not read, is left out). Placeholder vocabularies of
# the real size; dimensions recalled from each published config.json.
COMMAND_R7B = Shape(
    name="command-r7b-q4_k_m", arch="cohere2", source="CohereForAI/c4ai-command-r7b-12-2024",
    title="C4Ai Command R7B 12 2024", ftype="Q4_K_M", n_layer=32, n_embd=4096, n_ff=14336,
    n_head=32, n_head_kv=8, head_dim=128, n_vocab=256000, ctx_train=131072, rope_base=50000.0,
    norm_eps=1e-5, tied=True, bos_id=5, eos_id=255001, sliding_window=4096,
    extra=(("attention.layer_norm_epsilon", 1e-5), ("logit_scale", 0.25)),
)  # fmt: skip
GRANITE_MOE_3B = Shape(
    name="granite3.1-3b-a800m-q4_k_m", arch="granitemoe",
    source="ibm-granite/granite-3.1-3b-a800m-instruct", title="Granite 3.1 3b A800M Instruct",
    ftype="Q4_K_M", n_layer=32, n_embd=1536, n_ff=512, n_head=24, n_head_kv=8, head_dim=64,
    n_vocab=49155, ctx_train=131072, rope_base=1e7, norm_eps=1e-6, tied=True, bos_id=0,
    eos_id=0, n_expert=40, n_expert_used=8,
    extra=(("logit_scale", 6.0), ("residual_scale", 0.22), ("embedding_scale", 12.0),
           ("attention.scale", 0.015625)),
)  # fmt: skip
STARCODER2_7B = Shape(
    name="starcoder2-7b-q4_k_m", arch="starcoder2", source="bigcode/starcoder2-7b",
    title="Starcoder2 7b", ftype="Q4_K_M", n_layer=32, n_embd=4608, n_ff=18432, n_head=36,
    n_head_kv=4, head_dim=128, n_vocab=49152, ctx_train=16384, rope_base=1e6, norm_eps=1e-5,
    tied=True, bos_id=0, eos_id=0, extra=(("attention.layer_norm_epsilon", 1e-5),),
)  # fmt: skip
HELD_OUT: tuple[str, ...] = (
    QWEN25_7B_Q5.name, QWEN3_8B_Q40.name, GEMMA3_4B_Q6.name,
    COMMAND_R7B.name, GRANITE_MOE_3B.name, STARCODER2_7B.name,
)  # fmt: skip

_ENTRIES: list[Shape] = [
    LLAMA31_8B,
    MISTRAL_7B,
    LLAMA32_1B,
    replace(LLAMA32_1B, name="llama3.2-1b-f16", ftype="F16"),
    LLAMA32_3B,
    QWEN25_3B,
    replace(QWEN25_3B, name="qwen2.5-3b-q8_0", ftype="Q8_0"),
    QWEN3_4B,
    GEMMA2_2B,
    replace(GEMMA2_2B, name="gemma2-2b-q8_0", ftype="Q8_0"),
    GEMMA3_1B,
    PHI3_MINI,
    QWEN3_30B_A3B,
    OLMOE_1B_7B,
    QWEN35_9B,
    DEEPSEEK_V2_LITE,
    QWEN25_7B_Q5,
    QWEN3_8B_Q40,
    GEMMA3_4B_Q6,
    COMMAND_R7B,
    GRANITE_MOE_3B,
    STARCODER2_7B,
]
SHAPES: dict[str, Shape] = {s.name: s for s in _ENTRIES}


# --- metadata ---------------------------------------------------------------------------------


def metadata(shape: Shape) -> dict[str, KeyValue]:
    """The `<arch>.` and `general.` keys (the tokenizer's are added by `build`)."""
    a = shape.arch
    keys: dict[str, KeyValue] = {
        "general.name": shape.title,
        "general.file_type": FILE_TYPE[shape.ftype],
        f"{a}.context_length": shape.ctx_train,
        f"{a}.embedding_length": shape.n_embd,
        f"{a}.block_count": shape.n_layer,
        f"{a}.feed_forward_length": shape.n_ff,
        f"{a}.attention.head_count": shape.n_head,
        f"{a}.attention.head_count_kv": shape.n_head_kv,
        f"{a}.attention.key_length": shape.head_dim,
        f"{a}.attention.value_length": shape.head_dim,
        f"{a}.attention.layer_norm_rms_epsilon": shape.norm_eps,
        f"{a}.rope.freq_base": shape.rope_base,
        f"{a}.rope.dimension_count": shape.rope_dims or shape.head_dim,
    }
    if shape.delta_net:
        conv, head, k_heads, v_heads = shape.delta_net
        keys |= {
            f"{a}.ssm.conv_kernel": conv, f"{a}.ssm.state_size": head,
            f"{a}.ssm.group_count": k_heads, f"{a}.ssm.time_step_rank": v_heads,
            f"{a}.ssm.inner_size": head * v_heads,
            f"{a}.full_attention_interval": shape.full_attention_interval,
        }  # fmt: skip
    if shape.mla:
        rank, nope, rope, v_head = shape.mla
        keys |= {
            f"{a}.attention.kv_lora_rank": rank, f"{a}.attention.value_length": rank,
            f"{a}.attention.key_length_mla": nope + rope,
            f"{a}.attention.value_length_mla": v_head,
            f"{a}.expert_shared_count": shape.n_expert_shared,
            f"{a}.leading_dense_block_count": shape.n_dense_lead,
            f"{a}.expert_weights_scale": 1.0, f"{a}.expert_gating_func": 1,  # softmax
        }  # fmt: skip
    if shape.arch == "llama":
        keys[f"{a}.vocab_size"] = shape.n_vocab
    if shape.ftype != "F16":
        keys["general.quantization_version"] = 2
    if shape.sliding_window:
        keys[f"{a}.attention.sliding_window"] = shape.sliding_window
    if shape.n_expert:
        keys[f"{a}.expert_count"] = shape.n_expert
        keys[f"{a}.expert_used_count"] = shape.n_expert_used
    if shape.n_ff_expert:
        keys[f"{a}.expert_feed_forward_length"] = shape.n_ff_expert
    for key, value in shape.extra:
        keys[f"{a}.{key}"] = value
    return keys


# --- tensor table -----------------------------------------------------------------------------


def _delta_net_block(shape: Shape, il: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    """A Qwen3.5 block (qwen35.cpp load_arch_tensors): attention with a gate folded into a
    doubled Q projection, or a gated delta net; the same feed-forward after either."""
    e, p = shape.n_embd, f"blk.{il}."
    yield p + "attn_norm.weight", (e,)
    if shape.is_attention(il):
        q, kv = shape.n_head * shape.head_dim, shape.n_head_kv * shape.head_dim
        yield p + "attn_q.weight", (e, 2 * q)
        yield p + "attn_k.weight", (e, kv)
        yield p + "attn_v.weight", (e, kv)
        yield p + "attn_q_norm.weight", (shape.head_dim,)
        yield p + "attn_k_norm.weight", (shape.head_dim,)
        yield p + "attn_output.weight", (q, e)
    else:
        conv, head, k_heads, v_heads = shape.delta_net
        key_dim, value_dim = head * k_heads, head * v_heads
        yield p + "attn_qkv.weight", (e, 2 * key_dim + value_dim)
        yield p + "attn_gate.weight", (e, value_dim)
        yield p + "ssm_conv1d.weight", (conv, 2 * key_dim + value_dim)
        yield p + "ssm_dt.bias", (v_heads,)
        yield p + "ssm_a", (v_heads,)
        yield p + "ssm_beta.weight", (e, v_heads)
        yield p + "ssm_alpha.weight", (e, v_heads)
        yield p + "ssm_norm.weight", (head,)
        yield p + "ssm_out.weight", (value_dim, e)
    yield p + "post_attention_norm.weight", (e,)
    yield p + "ffn_gate.weight", (e, shape.n_ff)
    yield p + "ffn_up.weight", (e, shape.n_ff)
    yield p + "ffn_down.weight", (shape.n_ff, e)


def _mla_block(shape: Shape, il: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    """A DeepSeek-V2-Lite block (deepseek2.cpp load_arch_tensors, no Q compression, an MLA
    file): the compressed KV with its rope part, its norm, the per-head K and V
    decompressions, then a dense feed-forward or routed and shared experts."""
    e, p = shape.n_embd, f"blk.{il}."
    rank, nope, rope, v_head = shape.mla
    yield p + "attn_norm.weight", (e,)
    yield p + "attn_q.weight", (e, shape.n_head * (nope + rope))
    yield p + "attn_kv_a_mqa.weight", (e, rank + rope)
    yield p + "attn_kv_a_norm.weight", (rank,)
    yield p + "attn_k_b.weight", (nope, rank, shape.n_head)
    yield p + "attn_v_b.weight", (rank, v_head, shape.n_head)
    yield p + "attn_output.weight", (shape.n_head * v_head, e)
    yield p + "ffn_norm.weight", (e,)
    if il < shape.n_dense_lead:
        yield p + "ffn_gate.weight", (e, shape.n_ff)
        yield p + "ffn_up.weight", (e, shape.n_ff)
        yield p + "ffn_down.weight", (shape.n_ff, e)
        return
    ff, shared = shape.n_ff_expert, shape.n_ff_expert * shape.n_expert_shared
    yield p + "ffn_gate_inp.weight", (e, shape.n_expert)
    yield p + "ffn_gate_exps.weight", (e, ff, shape.n_expert)
    yield p + "ffn_up_exps.weight", (e, ff, shape.n_expert)
    yield p + "ffn_down_exps.weight", (ff, e, shape.n_expert)
    yield p + "ffn_gate_shexp.weight", (e, shared)
    yield p + "ffn_up_shexp.weight", (e, shared)
    yield p + "ffn_down_shexp.weight", (shared, e)


def _block(shape: Shape, il: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    """One block's tensors in converter order: (name, shape ne0 first)."""
    if shape.layout.delta_net:
        yield from _delta_net_block(shape, il)
        return
    if shape.layout.mla:
        yield from _mla_block(shape, il)
        return
    lay, e = shape.layout, shape.n_embd
    q, kv = shape.n_head * shape.head_dim, shape.n_head_kv * shape.head_dim
    p = f"blk.{il}."
    yield p + "attn_norm.weight", (e,)
    if lay.layer_norm:
        yield p + "attn_norm.bias", (e,)
    if lay.fused:
        yield p + "attn_qkv.weight", (e, q + 2 * kv)
    else:
        yield p + "attn_q.weight", (e, q)
        yield p + "attn_k.weight", (e, kv)
        yield p + "attn_v.weight", (e, kv)
        if lay.qkv_bias:
            yield p + "attn_q.bias", (q,)
            yield p + "attn_k.bias", (kv,)
            yield p + "attn_v.bias", (kv,)
    if lay.qk_norm:
        full = lay.qk_norm == "full"
        yield p + "attn_q_norm.weight", (q if full else shape.head_dim,)
        yield p + "attn_k_norm.weight", (kv if full else shape.head_dim,)
    yield p + "attn_output.weight", (q, e)
    if lay.out_bias:
        yield p + "attn_output.bias", (e,)
    if lay.post_norms:
        yield p + "post_attention_norm.weight", (e,)
    if not lay.parallel:
        yield p + "ffn_norm.weight", (e,)
        if lay.layer_norm:
            yield p + "ffn_norm.bias", (e,)
    if lay.moe:
        ff = shape.n_ff_expert or shape.n_ff
        yield p + "ffn_gate_inp.weight", (e, shape.n_expert)
        yield p + "ffn_gate_exps.weight", (e, ff, shape.n_expert)
        yield p + "ffn_up_exps.weight", (e, ff, shape.n_expert)
        yield p + "ffn_down_exps.weight", (ff, e, shape.n_expert)
    elif lay.fused:
        yield p + "ffn_up.weight", (e, 2 * shape.n_ff)
        yield p + "ffn_down.weight", (shape.n_ff, e)
    elif lay.plain_ffn:
        yield p + "ffn_up.weight", (e, shape.n_ff)
        yield p + "ffn_up.bias", (shape.n_ff,)
        yield p + "ffn_down.weight", (shape.n_ff, e)
        yield p + "ffn_down.bias", (e,)
    else:
        yield p + "ffn_gate.weight", (e, shape.n_ff)
        yield p + "ffn_up.weight", (e, shape.n_ff)
        yield p + "ffn_down.weight", (shape.n_ff, e)
    if lay.post_norms:
        yield p + "post_ffw_norm.weight", (e,)


def _layout(shape: Shape) -> list[tuple[str, tuple[int, ...]]]:
    out: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (shape.n_embd, shape.n_vocab))]
    if shape.rope_freqs:
        out.append(("rope_freqs.weight", (shape.head_dim // 2,)))
    for il in range(shape.n_layer):
        out += _block(shape, il)
    out.append(("output_norm.weight", (shape.n_embd,)))
    if shape.layout.layer_norm:
        out.append(("output_norm.bias", (shape.n_embd,)))
    if not shape.tied:
        out.append(("output.weight", (shape.n_embd, shape.n_vocab)))
    return out


def _quantizable(name: str, shape: tuple[int, ...]) -> bool:
    """llama-quant.cpp tensor_allows_quantization, for the names used here."""
    return (
        len(shape) >= 2
        and name.endswith("weight")
        and "_norm.weight" not in name
        and "ffn_gate_inp.weight" not in name
        and "ssm_conv1d" not in name  # Mamba/delta-net convolutions stay F32
    )


def _category(name: str) -> str:
    """llama-quant.cpp tensor_get_category: first match wins, by substring."""
    if name == "output.weight":
        return "output"
    if name == "token_embd.weight":
        return "token_embd"
    for cat in ("attn_qkv.weight", "attn_v.weight", "attn_k.weight", "attn_q.weight"):
        if cat in name:
            return "attn_v" if cat == "attn_qkv.weight" else cat.removesuffix(".weight")
    if "attn_output.weight" in name:
        return "attn_output"
    for cat in ("ffn_up", "ffn_gate", "ffn_down"):
        if cat in name:
            return cat
    return "other"


def use_more_bits(i_layer: int, n_layer: int) -> bool:
    """llama.cpp's choice of the layers that get more bits in *_M mixes."""
    return (
        i_layer < n_layer // 8 or i_layer >= 7 * n_layer // 8 or (i_layer - n_layer // 8) % 3 == 2
    )


def _block_size(type_name: str) -> int:
    return GGML_QUANT_SIZES[GGMLQuantizationType[type_name]][0]


def _fallback(type_name: str, ncols: int) -> str:
    """llama-quant.cpp tensor_type_fallback: a row that does not split into blocks."""
    if ncols % _block_size(type_name) == 0:
        return type_name
    smaller = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}.get(type_name, type_name)
    return smaller if ncols % _block_size(smaller) == 0 else "F16"


def tensor_types(shape: Shape) -> list[TensorSpec]:
    """The tensor table with llama.cpp's per-tensor types for the shape's file type."""
    layout = _layout(shape)
    default = {"F16": "F16", "Q4_0": "Q4_0", "Q8_0": "Q8_0", "Q4_K_M": "Q4_K", "Q5_K_M": "Q5_K",
               "Q6_K": "Q6_K"}[shape.ftype]  # fmt: skip
    more_bits = shape.ftype in ("Q4_K_M", "Q5_K_M")  # attn_v and ffn_down get Q6_K in some layers
    n_attn_v = sum(1 for n, _ in layout if _category(n) == "attn_v")
    i_attn_v = i_ffn_down = 0
    out: list[TensorSpec] = []
    for name, dims in layout:
        if not _quantizable(name, dims):
            out.append(TensorSpec(name, "F32", dims))
            continue
        t = default
        cat = _category(name)
        if shape.ftype == "F16":
            out.append(TensorSpec(name, t, dims))
            continue
        if cat == "output" or (cat == "token_embd" and shape.tied):
            if dims[0] % _block_size(t) != 0:
                t = "Q8_0"
            elif t != "Q8_0":
                t = "Q6_K"
        elif cat == "attn_v":
            if more_bits and use_more_bits(i_attn_v, n_attn_v):
                t = "Q6_K"
            if shape.n_expert == 8:
                t = "Q8_0"
            i_attn_v += 1
        elif cat == "attn_k" and shape.n_expert == 8:
            t = "Q8_0"
        elif cat == "ffn_down":
            # MoE: the layer comes from the name (llama-quant.cpp layer_info)
            il = int(name.split(".")[1]) if shape.n_expert > 1 else i_ffn_down
            if more_bits and use_more_bits(il, shape.n_layer):
                t = "Q6_K"
            i_ffn_down += 1
        elif cat == "attn_output" and shape.n_expert == 8 and shape.ftype == "Q4_K_M":
            t = "Q5_K"
        out.append(TensorSpec(name, _fallback(t, dims[0]), dims))
    return out


# --- tokenizer --------------------------------------------------------------------------------


def _tokenizer(shape: Shape, bpe: bool = False) -> tuple[list[str], list[int]]:
    """A cheap vocabulary of the real size, specials at the real ids: SPM-style byte tokens, or
    with `bpe` the 256 byte-level characters a GPT-2 style vocabulary falls back to."""
    n = shape.n_vocab
    tokens = [f"<t{i}>" for i in range(n)]
    types = [int(TokenType.NORMAL)] * n
    for b in range(256):
        if bpe:
            tokens[BYTE_TOKENS_AT + b] = _BYTE_CHARS[b]
        else:
            tokens[BYTE_TOKENS_AT + b] = f"<0x{b:02X}>"
            types[BYTE_TOKENS_AT + b] = int(TokenType.BYTE)
    tokens[0], types[0] = "<unk>", int(TokenType.UNKNOWN)
    tokens[shape.bos_id], types[shape.bos_id] = "<s>", int(TokenType.CONTROL)
    tokens[shape.eos_id], types[shape.eos_id] = "</s>", int(TokenType.CONTROL)
    return tokens, types


def _byte_chars() -> list[str]:
    """GPT-2's byte-level alphabet: printable Latin-1 bytes stand for themselves, the other 68
    bytes for code points from U+0100 on (the table byte-level BPE vocabularies are built on)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = iter(range(0x100, 0x200))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


_BYTE_CHARS = _byte_chars()


def _merges(tokens: list[str], count: int) -> list[str]:
    """`count` distinct merge rules "left right", each a split of a vocabulary entry (as a real
    merge list's pieces are): the rank table llama.cpp builds from them has the real size."""
    out: list[str] = []
    for text in tokens[BYTE_TOKENS_AT + 256 :] + tokens[:BYTE_TOKENS_AT]:
        if " " in text:
            continue
        for cut in range(1, len(text)):
            out.append(f"{text[:cut]} {text[cut:]}")
            if len(out) == count:
                return out
    raise ValueError(f"a vocabulary of {len(tokens)} entries gives fewer than {count} merges")


# --- files ------------------------------------------------------------------------------------


def _pad(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def data_bytes(tensors: list[TensorSpec]) -> int:
    """Bytes from the data section's start to the end of the last tensor (each one aligned)."""
    return sum(_pad(t.n_bytes) for t in tensors[:-1]) + tensors[-1].n_bytes


class _Writer(GGUFWriter):
    """GGUFWriter with a fast path for the long tokenizer arrays (same bytes, 20x quicker)."""

    def _pack_val(
        self, val: Any, vtype: GGUFValueType, add_vtype: bool, sub_type: GGUFValueType | None = None
    ) -> bytes:
        if vtype != GGUFValueType.ARRAY or not isinstance(val, list) or len(val) < 2:
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        if all(type(v) is str for v in val):
            ltype = GGUFValueType.STRING
            raw = [v.encode() for v in val]
            body = b"".join(struct.pack("<Q", len(r)) + r for r in raw)
        elif all(type(v) is float for v in val):
            ltype, body = GGUFValueType.FLOAT32, np.asarray(val, dtype="<f4").tobytes()
        elif all(type(v) is int for v in val):  # `type(...) is`: a bool is not an int here
            ltype, body = GGUFValueType.INT32, np.asarray(val, dtype="<i4").tobytes()
        else:
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        head = struct.pack("<I", vtype) if add_vtype else b""
        return head + struct.pack("<IQ", ltype, len(val)) + body


def _write_header(shape: Shape, path: Path, bpe: bool = False) -> int:
    """Write the header (keys, tokenizer, tensor table, padding); return its length. With `bpe`
    the tokenizer is a GPT-2 style one with the real number of merges."""
    writer = _Writer(path, shape.arch)
    for key, value in metadata(shape).items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_string(key, value)
    tokens, types = _tokenizer(shape, bpe)
    if shape.rope_sections:
        writer.add_array(f"{shape.arch}.rope.dimension_sections", list(shape.rope_sections))
    writer.add_tokenizer_model("gpt2" if bpe else "llama")
    writer.add_tokenizer_pre(shape.bpe_pre if bpe else "default")
    writer.add_token_list(tokens)
    if bpe:
        writer.add_token_merges(_merges(tokens, shape.n_merges))
    else:
        writer.add_token_scores([0.0] * shape.n_vocab)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(shape.bos_id)
    writer.add_eos_token_id(shape.eos_id)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    for t in tensor_types(shape):
        qtype = GGMLQuantizationType[t.ggml_type]
        np_shape = tuple(reversed(t.shape))
        if qtype == GGMLQuantizationType.F32:
            writer.add_tensor_info(t.name, np_shape, np.dtype(np.float32), t.n_bytes)
        elif qtype == GGMLQuantizationType.F16:
            writer.add_tensor_info(t.name, np_shape, np.dtype(np.float16), t.n_bytes)
        else:
            byte_shape = quant_shape_to_byte_shape(np_shape, qtype)
            writer.add_tensor_info(
                t.name, byte_shape, np.dtype(np.uint8), t.n_bytes, raw_dtype=qtype
            )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()  # pads to the alignment: the data section starts here
    writer.close()
    return path.stat().st_size


def file_bytes(shape: Shape, header_bytes: int) -> int:
    """The full file size: the padded header, then every tensor."""
    return _pad(header_bytes) + data_bytes(tensor_types(shape))


def shape_named(name: str) -> Shape:
    """The table entry called `name`; a ValueError naming the choices otherwise."""
    shape = SHAPES.get(name)
    if shape is None:
        shown = name if name.isprintable() and len(name) <= 64 else repr(name[:64])
        raise ValueError(f"unknown shape {shown}; choose from: {', '.join(SHAPES)}")
    return shape


def build(name: str, out_dir: Path | None = None, *, bpe: bool = False) -> Path:
    """Write `<out_dir>/<name>.gguf` (header + a hole for the weights); reuse a matching one.
    With `bpe`, `<name>.bpe.gguf` with the real tokenizer's kind and merge count instead of the
    placeholder SentencePiece vocabulary (only for entries whose tokenizer is BPE)."""
    shape = shape_named(name)
    if bpe and not shape.n_merges:
        raise ValueError(f"{shape.name} has a SentencePiece tokenizer: no BPE merges to write")
    out = Path(out_dir) if out_dir is not None else DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    # the table's name, never the caller's string
    target = out / f"{shape.name}{'.bpe' if bpe else ''}.gguf"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{shape.name}.", suffix=".part", dir=out)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        header_len = _write_header(shape, tmp, bpe)
        size = file_bytes(shape, header_len)
        if _same(target, tmp, header_len, size):
            return target
        os.truncate(tmp, size)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# give_routing's rules, by version (2: tied models' logits made near-uniform, 2026-12-02; 3:
# routers blind to the embeddings' common offset, every expert about as busy, 2026-12-02); a
# routed copy made by other rules is rebuilt.
ROUTING_VERSION = 3
# The final norm's weight in a routed tied model (give_routing): logits a millionth of the
# embedding's self-similarity, near-uniform over any vocabulary.
TIED_OUTPUT_NORM = 1e-6
# Q4_K and Q6_K blocks of 256 weights: where a block's f16 scale sits, and its size.
_SCALED_BLOCKS = {"Q4_K": (0, 144), "Q6_K": (208, 210), "Q8_0": (0, 34)}


def give_routing(path: Path, seed: int = 0) -> None:
    """Make an MoE shape file route like a trained model: a different top-k of experts for each
    token and layer, in place (the file must be written out dense).

    With every weight zero, every hidden state is zero, the router's logits tie and the same
    experts are picked for every token: a mapped model's untouched experts then look cold, and
    the cap measured for it is far below what real routing needs. Random token embeddings, norm
    weights of one, random routers and a random output matrix with small, spread logits (so that
    a sampled token is nearly always a new one: `_llama.run_trial(sample=True)`) make each token's
    hidden state (its embedding: the zero attention and expert outputs leave the residual stream
    unchanged) pick its own experts in every layer. Only these tensors are touched; the expert
    weights stay zero (reading them costs the same).

    A trained router is balanced: over a stream of tokens each expert serves about its share (the
    load-balancing loss trains for it), and that is what a mapped MoE's memory must hold. Random
    Q4_K embeddings are not centred (their blocks, with no offset, hold values of one sign), so a
    random router row also scores their common offset, the same for every token: the experts
    whose rows sum high then won most tokens and a third of them hardly any (DeepSeek-V2-Lite,
    mapped, held full speed a gigabyte under its plan that way). Each router row is centred (it
    sums to zero): only what differs between tokens routes them.
    """
    import numpy as np
    from gguf import GGUFReader

    rng = np.random.default_rng(seed)
    reader = GGUFReader(path)
    # A tied model's output matrix is its embedding: each token's logits then peak at the token
    # itself (its embedding dotted with itself), by thousands, and every sampled token repeats
    # the last, so the same experts serve every token (Granite MoE's mapped plan read 1.17-1.21x
    # its cap that way). A tiny final norm makes its logits near-uniform instead; the routers
    # read the feed-forward norms, which stay one.
    tied = not any(t.name == "output.weight" for t in reader.tensors)
    edits: list[tuple[int, bytes]] = []
    for t in reader.tensors:
        name, kind = t.name, t.tensor_type.name
        offset, n = int(t.data_offset), int(t.n_bytes)
        if name.endswith(("ffn_norm.weight", "output_norm.weight")) and kind == "F32":
            value = TIED_OUTPUT_NORM if tied and name == "output_norm.weight" else 1.0
            edits.append((offset, np.full(n // 4, value, dtype="<f4").tobytes()))
        elif name.endswith("ffn_gate_inp.weight") and kind == "F32":
            rows = rng.standard_normal(((n // 4) // int(t.shape[0]), int(t.shape[0])))
            rows -= rows.mean(axis=1, keepdims=True)  # blind to a common offset (see above)
            edits.append((offset, rows.astype("<f4").tobytes()))
        elif name in ("token_embd.weight", "output.weight"):
            if kind in ("F32", "F16"):
                dt = "<f4" if kind == "F32" else "<f2"
                size = 4 if kind == "F32" else 2
                edits.append((offset, rng.standard_normal(n // size).astype(dt).tobytes()))
                continue
            if kind not in _SCALED_BLOCKS:
                raise ValueError(f"{path.name}: cannot randomize {name} of type {kind}")
            at, block = _SCALED_BLOCKS[kind]
            raw = rng.integers(0, 256, size=n, dtype=np.uint8).reshape(-1, block)
            # Embeddings of a modest size; an output matrix small enough that a sampled token
            # is nearly always a new one. Not uniform: an untied Q6_K output's random sub-block
            # scales leave logits of std ~3.8 (DeepSeek-V2-Lite's copy: 286-290 distinct tokens
            # in 400 sampled steps, no expert idle; a tied model's tiny final norm is flatter).
            value = 1 / 64 if name == "token_embd.weight" else 2.0**-14
            scale = np.frombuffer(np.float16(value).tobytes(), dtype=np.uint8)
            raw[:, at : at + 2] = scale  # a finite, modest scale for every block
            if kind == "Q4_K":
                raw[:, 2:4] = 0  # dmin: no offset
            edits.append((offset, raw.tobytes()))
    del reader
    with path.open("r+b") as f:
        for offset, data in edits:
            f.seek(offset)
            f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _same(target: Path, fresh: Path, header_len: int, size: int) -> bool:
    """Whether `target` is a regular file of `size` bytes that starts with `fresh`'s header."""
    try:
        st = target.lstat()
    except FileNotFoundError:
        return False
    if not target.is_file() or target.is_symlink() or st.st_size != size:
        return False
    with target.open("rb") as a, fresh.open("rb") as b:
        return a.read(header_len) == b.read(header_len)


# --- command line -----------------------------------------------------------------------------


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build real-shaped sparse GGUF files.")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder (default {DEFAULT_OUT})")
    ap.add_argument("--list", action="store_true", help="list the entries, build nothing")
    ap.add_argument("names", nargs="*", help="entries to build (default: all)")
    args = ap.parse_args(argv)
    if args.list:
        for s in SHAPES.values():
            print(f"{s.name:24} {s.arch:9} {s.ftype:7} {s.source}")
        return 0
    names = args.names or list(SHAPES)
    try:
        shapes = [shape_named(n) for n in names]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for s in shapes:
        try:
            path = build(s.name, args.out)
        except OSError as exc:
            print(f"error: cannot write {s.name} under {args.out}: {exc.strerror}", file=sys.stderr)
            return 1
        size = path.stat().st_size
        print(f"{s.name:24} {s.arch:9} {_gib(size):>10}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
