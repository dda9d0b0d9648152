"""GGUF header reading on small synthetic files written with gguf.GGUFWriter."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import quant_shape_to_byte_shape

from deployer.adapters.gguf_files import facts_from_gguf, facts_from_gguf_parts, gguf_header_bytes
from deployer.core.errors import GGUFReadError
from deployer.core.model.facts import ModelArch
from deployer.core.model.gguf_meta import CPU_REPACK_TYPES, TensorInfo, layout_from_tensors

# (elements per block, bytes per block) of the ggml types used here, from ggml's type traits.
TYPE_SIZES = {
    "F32": (1, 4),
    "Q4_0": (32, 18),
    "Q8_0": (32, 34),
    "Q4_K": (256, 144),
    "Q6_K": (256, 210),
}


def nbytes(ggml_type: str, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor of `shape` (ggml order, ne0 first)."""
    block, size = TYPE_SIZES[ggml_type]
    return int(np.prod(shape)) // block * size


TensorSpec = tuple[str, str, tuple[int, ...]]


@dataclass
class Spec:
    """A synthetic model: architecture, keys (without the arch prefix unless dotted) and tensors."""

    arch: str
    keys: dict[str, Any]
    tensors: list[TensorSpec]
    general: dict[str, Any] = field(default_factory=dict)


def write_gguf(path: Path, spec: Spec) -> Path:
    """Write `spec` as a GGUF file with zero-filled tensor data."""
    writer = GGUFWriter(path, spec.arch)
    for key, value in {
        **{f"{spec.arch}.{k}": v for k, v in spec.keys.items()},
        **spec.general,
    }.items():
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        else:
            writer.add_array(key, value)
    for name, ggml_type, shape in spec.tensors:
        qtype = GGMLQuantizationType[ggml_type]
        np_shape = tuple(reversed(shape))
        if ggml_type == "F32":
            writer.add_tensor(name, np.zeros(np_shape, dtype=np.float32))
        else:
            data = np.zeros(quant_shape_to_byte_shape(np_shape, qtype), dtype=np.uint8)
            writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def tokens(n: int) -> dict[str, Any]:
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": [f"t{i}" for i in range(n)]}


def block_tensors(il: int, embd: int, q_rows: int, kv_rows: int, ff: int) -> list[TensorSpec]:
    p = f"blk.{il}."
    return [
        (p + "attn_norm.weight", "F32", (embd,)),
        (p + "attn_q.weight", "Q4_0", (embd, q_rows)),
        (p + "attn_k.weight", "Q4_0", (embd, kv_rows)),
        (p + "attn_v.weight", "Q8_0", (embd, kv_rows)),
        (p + "attn_output.weight", "Q4_K", (q_rows, embd)),
        (p + "ffn_gate.weight", "Q4_K", (embd, ff)),
        (p + "ffn_up.weight", "Q4_0", (embd, ff + 4)),  # 516 rows: not a multiple of 8
        (p + "ffn_down.weight", "Q6_K", (ff, embd)),
        (p + "ffn_norm.weight", "F32", (embd,)),
    ]


EMBD, VOCAB, FF = 256, 300, 512


def llama_spec(n_layer: int = 2, tied: bool = False) -> Spec:
    tensors: list[TensorSpec] = [
        ("token_embd.weight", "Q8_0", (EMBD, VOCAB)),
        ("output_norm.weight", "F32", (EMBD,)),
    ]
    if not tied:
        tensors.append(("output.weight", "Q6_K", (EMBD, VOCAB)))
    for il in range(n_layer):
        tensors += block_tensors(il, EMBD, 256, 64, FF)
    keys = {
        "block_count": n_layer,
        "embedding_length": EMBD,
        "attention.head_count": 8,
        "attention.head_count_kv": 2,
        "feed_forward_length": FF,
        "context_length": 4096,
    }
    return Spec(
        "llama",
        keys,
        tensors,
        {**tokens(VOCAB), "general.file_type": 15, "general.name": "Tiny Llama"},
    )


# Per block of block_tensors(il, 256, 256, 64, 512).
BLOCK_BYTES = (
    nbytes("F32", (256,)) * 2
    + nbytes("Q4_0", (256, 256))
    + nbytes("Q4_0", (256, 64))
    + nbytes("Q8_0", (256, 64))
    + nbytes("Q4_K", (256, 256))
    + nbytes("Q4_K", (256, 512))
    + nbytes("Q4_0", (256, 516))
    + nbytes("Q6_K", (512, 256))
)
# attn_q, attn_k (Q4_0), attn_output, ffn_gate (Q4_K); not attn_v (Q8_0) nor ffn_up (516 rows).
REPACK_BYTES = (
    nbytes("Q4_0", (256, 256))
    + nbytes("Q4_0", (256, 64))
    + nbytes("Q4_K", (256, 256))
    + nbytes("Q4_K", (256, 512))
)


def test_byte_helper_matches_ggml_sizes() -> None:
    assert nbytes("Q4_0", (256, 256)) == 36864
    assert nbytes("Q4_K", (256, 512)) == 73728
    assert BLOCK_BYTES == 2048 + 36864 + 9216 + 17408 + 36864 + 73728 + 74304 + 107520
    assert REPACK_BYTES == 36864 + 9216 + 36864 + 73728
    assert {"Q4_0", "Q4_K"} <= CPU_REPACK_TYPES


def test_llama_untied_gqa(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny-Q4_K_M.gguf", llama_spec())
    facts = facts_from_gguf(path)
    arch = facts.arch
    assert facts.name == "Tiny Llama"
    assert facts.quant == "Q4_K_M"
    assert facts.source == str(path)
    assert arch.architecture == "llama"
    assert (arch.n_layer, arch.n_embd, arch.n_head, arch.n_head_kv) == (2, 256, 8, [2, 2])
    assert (arch.head_dim_k, arch.head_dim_v) == (32, 32)  # n_embd / n_head
    assert (arch.n_ff, arch.n_vocab, arch.ctx_train) == (512, 300, 4096)
    assert (arch.sliding_window, arch.swa_layers) == (0, [])
    assert not arch.tied_embeddings
    assert (arch.n_expert, arch.kv_lora_rank, arch.n_rot, arch.recurrent_state_bytes_per_seq) == (
        0,
        0,
        0,
        0,
    )
    w = facts.weights
    assert w.exact and w.output_in_file
    assert w.token_embd_bytes == nbytes("Q8_0", (256, 300)) == 81600
    assert w.output_bytes == nbytes("Q6_K", (256, 300)) + 1024 == 63000 + 1024
    assert w.block_bytes == [BLOCK_BYTES, BLOCK_BYTES]
    assert w.cpu_repack_bytes == [REPACK_BYTES, REPACK_BYTES]
    assert w.file_bytes == path.stat().st_size
    # Between tensors there is only alignment padding (32 B): 63000 B of Q6_K is followed by 8.
    assert path.stat().st_size - gguf_header_bytes(path) - w.tensor_bytes == 8


def test_tied_embeddings_and_per_layer_kv(tmp_path: Path) -> None:
    spec = llama_spec(n_layer=3, tied=True)
    spec.keys["attention.head_count_kv"] = [2, 4, 2]
    spec.keys["attention.key_length"] = 64
    spec.keys["attention.value_length"] = 48
    spec.keys["vocab_size"] = VOCAB
    spec.general = {"general.name": "Tied"}  # no tokens, no file type
    facts = facts_from_gguf(write_gguf(tmp_path / "tied.gguf", spec), total_file_bytes=10**9)
    assert facts.arch.tied_embeddings
    assert facts.arch.n_head_kv == [2, 4, 2]
    assert (facts.arch.head_dim_k, facts.arch.head_dim_v) == (64, 32 + 16)
    assert facts.arch.n_vocab == VOCAB
    w = facts.weights
    assert not w.output_in_file
    # The device copy of token_embd plus output_norm, which the file does hold.
    assert w.output_bytes == w.token_embd_bytes + 1024
    assert w.untied_output_bytes == 1024  # output_norm: in the file, loaded
    assert w.file_bytes == 10**9
    # Dominant type by bytes: Q4_0 (attn_q, attn_k, ffn_up) over Q8_0 (token_embd, attn_v).
    assert facts.quant == "Q4_0"


def gemma_spec(n_layer: int, pattern: object = None, arch: str = "gemma3") -> Spec:
    keys: dict[str, Any] = {
        "block_count": n_layer,
        "embedding_length": 64,
        "attention.head_count": 4,
        "attention.head_count_kv": 1,
        "attention.key_length": 256,
        "attention.value_length": 256,
        "attention.sliding_window": 512,
        "feed_forward_length": 128,
        "context_length": 32768,
    }
    if pattern is not None:
        keys["attention.sliding_window_pattern"] = pattern
    tensors: list[TensorSpec] = [
        ("token_embd.weight", "Q8_0", (64, 40)),
        ("output_norm.weight", "F32", (64,)),
    ]
    tensors += [(f"blk.{il}.attn_norm.weight", "F32", (64,)) for il in range(n_layer)]
    return Spec(arch, keys, tensors, {"general.file_type": 15})


def test_gemma3_default_period_six(tmp_path: Path) -> None:
    spec = gemma_spec(12)
    spec.general["tokenizer.ggml.tokens"] = [f"<{i}>" for i in range(1000)]
    facts = facts_from_gguf(write_gguf(tmp_path / "g3.gguf", spec))
    arch = facts.arch
    assert arch.sliding_window == 512
    assert arch.swa_layers == [il % 6 != 5 for il in range(12)]
    assert sum(arch.swa_layers) == 10 and arch.is_swa(0) and not arch.is_swa(5)
    assert (arch.head_dim_k, arch.n_head_kv, arch.n_vocab) == (256, [1] * 12, 1000)
    assert facts.weights.block_bytes == [256] * 12
    assert facts.weights.cpu_repack_bytes == [0] * 12


def test_swa_pattern_from_period_key(tmp_path: Path) -> None:
    facts = facts_from_gguf(write_gguf(tmp_path / "p.gguf", gemma_spec(8, pattern=4)))
    assert facts.arch.swa_layers == [True, True, True, False] * 2


def test_swa_pattern_from_bool_array(tmp_path: Path) -> None:
    pattern = [True, False, False, True, True]
    facts = facts_from_gguf(write_gguf(tmp_path / "a.gguf", gemma_spec(5, pattern=pattern)))
    assert facts.arch.swa_layers == pattern


def test_gemma2_swa_on_even_layers(tmp_path: Path) -> None:
    facts = facts_from_gguf(write_gguf(tmp_path / "g2.gguf", gemma_spec(4, arch="gemma2")))
    assert facts.arch.swa_layers == [True, False, True, False]


def _arch_of(tmp_path: Path, spec: Spec, name: str = "m.gguf") -> Any:
    return facts_from_gguf(write_gguf(tmp_path / name, spec)).arch


# Every default period, read off src/models/<arch>.cpp (load_swa_pattern(ml, N[, dense_first])),
# written out for 8 layers: True where the layer slides.
def _slides(period: int, dense_first: bool, n: int = 8) -> list[bool]:
    if dense_first:
        return [il % period != 0 for il in range(n)]
    return [il % period < period - 1 for il in range(n)]


LOADER_PERIODS = {
    "gemma2": (2, False), "gpt-oss": (2, False), "gemma3": (6, False),
    "gemma-embedding": (6, False), "gemma3n": (5, False), "cohere2": (4, False),
    "cohere2moe": (4, True), "afmoe": (4, False), "exaone-moe": (4, False), "laguna": (4, True),
    "mellum": (4, False), "modern-bert": (3, True), "muse-glimmer": (4, False),
    "olmo2": (4, False), "plamo3": (8, False), "smallthinker": (4, True),
}  # fmt: skip


@pytest.mark.parametrize(("arch", "rule"), sorted(LOADER_PERIODS.items()))
def test_each_architecture_slides_the_layers_its_loader_says(
    tmp_path: Path, arch: str, rule: tuple[int, bool]
) -> None:
    assert _arch_of(tmp_path, gemma_spec(8, arch=arch)).swa_layers == _slides(*rule)


def test_dflash_and_lfm2moe_are_not_planned_as_sliding(tmp_path: Path) -> None:
    """DFlash drafts are not modelled (full attention is the safe count); LFM2-MoE's loader
    reads no window at all."""
    for arch in ("dflash", "lfm2moe"):
        assert _arch_of(tmp_path, gemma_spec(4, arch=arch), f"{arch}.gguf").swa_layers == []


def test_gemma2_without_a_window_key_slides_at_4096(tmp_path: Path) -> None:
    spec = gemma_spec(4, arch="gemma2")
    del spec.keys["attention.sliding_window"]
    a = _arch_of(tmp_path, spec, "g2.gguf")
    assert a.sliding_window == 4096 and a.swa_layers == [True, False, True, False]


def test_a_window_on_an_architecture_that_never_slides_keeps_the_full_cache(
    tmp_path: Path,
) -> None:
    """llama.cpp leaves swa_type NONE for an architecture whose loader does not set it, so a
    window in the file changes nothing; counting every layer as windowed would plan a fraction
    of the cache the server allocates."""
    for arch in ("llama", "phi3", "qwen2"):
        a = _arch_of(tmp_path, gemma_spec(6, arch=arch), f"{arch}.gguf")
        assert a.sliding_window == 0 and a.swa_layers == [] and not a.is_swa(0)


def test_llama4_is_chunked_at_8192_unless_the_file_turns_it_off(tmp_path: Path) -> None:
    spec = gemma_spec(8, arch="llama4")
    del spec.keys["attention.sliding_window"]
    a = _arch_of(tmp_path, spec, "l4.gguf")
    assert a.sliding_window == 8192 and a.swa_layers == [True, True, True, False] * 2
    spec.keys["attention.sliding_window"] = 0
    assert _arch_of(tmp_path, spec, "l4-off.gguf").swa_layers == []


def test_loaders_that_fix_their_own_window(tmp_path: Path) -> None:
    small = _arch_of(tmp_path, gemma_spec(4, arch="smallthinker"), "st.gguf")
    assert small.sliding_window == 4096 and small.swa_layers == [False, True, True, True]
    spec = gemma_spec(64, arch="exaone4")
    del spec.keys["attention.sliding_window"]
    assert _arch_of(tmp_path, spec, "ex64.gguf").sliding_window == 4096
    # only the 64-layer EXAONE 4 slides
    assert _arch_of(tmp_path, gemma_spec(32, arch="exaone4"), "ex32.gguf").swa_layers == []


def test_an_array_only_architecture_without_its_pattern_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GGUFReadError, match="sliding_window_pattern is missing"):
        facts_from_gguf(write_gguf(tmp_path / "g4.gguf", gemma_spec(6, arch="gemma4")))


def test_gemma4_heads_and_shared_kv_layers(tmp_path: Path) -> None:
    """Gemma 4: windowed layers have their own head size, and the last shared_kv_layers layers
    reuse an earlier layer's cache (llama_hparams::has_kv), so they hold none."""
    pattern = [True, True, True, True, True, False] * 2
    spec = gemma_spec(12, pattern=pattern, arch="gemma4")
    spec.keys |= {
        "attention.key_length": 512,
        "attention.value_length": 512,
        "attention.key_length_swa": 256,
        "attention.value_length_swa": 256,
        "attention.shared_kv_layers": 4,
    }
    a = _arch_of(tmp_path, spec, "g4.gguf")
    assert (a.head_dim_k, a.head_dim_k_swa, a.head_dim_v_swa, a.kv_layers) == (512, 256, 256, 8)
    assert [a.has_kv(i) for i in range(12)] == [True] * 8 + [False] * 4
    assert a.head_dims(0) == (256, 256) and a.head_dims(5) == (512, 512)
    assert a.n_embd_v_max == 512
    spec.keys["attention.shared_kv_layers"] = 11
    with pytest.raises(GGUFReadError, match=r"llama\.cpp needs 2"):
        _arch_of(tmp_path, spec, "g4-bad.gguf")


def test_gemma3n_keeps_20_caches(tmp_path: Path) -> None:
    a = _arch_of(tmp_path, gemma_spec(30, arch="gemma3n"), "g3n.gguf")
    assert a.kv_layers == 20 and a.has_kv(19) and not a.has_kv(20)


def test_lfm2_slides_its_attention_layers(tmp_path: Path) -> None:
    spec = gemma_spec(4, arch="lfm2")
    spec.keys["attention.head_count_kv"] = [0, 1, 0, 1]
    assert _arch_of(tmp_path, spec, "lfm2.gguf").swa_layers == [False, True, False, True]


def test_moe(tmp_path: Path) -> None:
    keys = {
        "block_count": 1,
        "embedding_length": 256,
        "attention.head_count": 4,
        "attention.head_count_kv": 4,
        "feed_forward_length": 1024,
        "expert_feed_forward_length": 128,
        "expert_count": 8,
        "expert_used_count": 2,
        "context_length": 2048,
        "vocab_size": 32,
    }
    tensors: list[TensorSpec] = [
        ("token_embd.weight", "F32", (256, 32)),
        ("output.weight", "F32", (256, 32)),
        ("blk.0.ffn_gate_inp.weight", "F32", (256, 8)),
        ("blk.0.ffn_gate_exps.weight", "Q4_0", (256, 128, 8)),  # 3-D experts repack too
        ("blk.0.ffn_down_exps.weight", "Q4_0", (128, 256, 8)),
    ]
    facts = facts_from_gguf(write_gguf(tmp_path / "moe.gguf", Spec("qwen3moe", keys, tensors)))
    assert (facts.arch.n_expert, facts.arch.n_expert_used, facts.arch.n_ff) == (8, 2, 128)
    assert facts.weights.block_bytes == [256 * 8 * 4 + 2 * nbytes("Q4_0", (256, 128, 8))]
    assert facts.weights.cpu_repack_bytes == [2 * nbytes("Q4_0", (256, 128, 8))]
    assert facts.weights.output_bytes == 256 * 32 * 4
    assert facts.quant == "Q4_0"


def test_mla_deepseek2(tmp_path: Path) -> None:
    keys = {
        "block_count": 2,
        "embedding_length": 128,
        "attention.head_count": 16,
        "attention.head_count_kv": 16,
        "attention.key_length": 48,
        "attention.value_length": 32,
        "attention.kv_lora_rank": 64,
        "rope.dimension_count": 16,
        "feed_forward_length": 256,
        "context_length": 163840,
        "vocab_size": 16,
    }
    tensors: list[TensorSpec] = [
        ("token_embd.weight", "F32", (128, 16)),
        ("output.weight", "F32", (128, 16)),
    ]
    tensors += [(f"blk.{il}.attn_kv_a_mqa.weight", "F32", (128, 80)) for il in range(2)]
    facts = facts_from_gguf(write_gguf(tmp_path / "ds.gguf", Spec("deepseek2", keys, tensors)))
    arch = facts.arch
    assert (arch.kv_lora_rank, arch.n_rot) == (64, 16)
    assert (arch.head_dim_k, arch.head_dim_v, arch.n_head_kv) == (48, 32, [16, 16])
    assert facts.weights.block_bytes == [128 * 80 * 4] * 2
    # no key_length_mla: llama.cpp caches every head's K and V, not the latent
    assert not arch.mla and not arch.indexer_layers


def _deepseek(arch: str, n_layer: int, **extra: Any) -> dict[str, Any]:
    keys: dict[str, Any] = {
        "block_count": n_layer, "embedding_length": 128, "attention.head_count": 16,
        "attention.head_count_kv": 1, "attention.key_length": 80, "attention.value_length": 64,
        "attention.key_length_mla": 48, "attention.value_length_mla": 32,
        "attention.kv_lora_rank": 64, "rope.dimension_count": 16, "feed_forward_length": 256,
        "context_length": 163840, "vocab_size": 16, "attention.indexer.key_length": 32,
        "attention.indexer.head_count": 4, "attention.indexer.top_k": 8,
    }  # fmt: skip
    keys.update(extra)
    return keys


def _meta(tmp_path: Path, arch: str, keys: dict[str, Any]) -> ModelArch:
    tensors: list[TensorSpec] = [("token_embd.weight", "F32", (128, 16))]
    return facts_from_gguf(write_gguf(tmp_path / "m.gguf", Spec(arch, keys, tensors))).arch


def test_mla_file_and_indexer_layers(tmp_path: Path) -> None:
    """key_length_mla stated: K only; DeepSeek 3.2 keeps an indexer key on its trunk layers,
    not on the nextn (MTP) one."""
    arch = _meta(tmp_path, "deepseek32", _deepseek("deepseek32", 4, nextn_predict_layers=1))
    assert arch.mla and (arch.indexer_k, arch.indexer_v) == (32, 0)
    assert arch.indexer_layers == [True, True, True, False]
    # an architecture whose loader reads no MLA keys is never MLA, and has no indexer
    plain = _meta(tmp_path, "llama", _deepseek("llama", 2, **{"attention.head_count_kv": 4}))
    assert not plain.mla and not plain.indexer_layers


@pytest.mark.parametrize(
    ("extra", "layers"),
    [
        ({}, [True] * 8),  # GLM 5 / 5.1: every layer
        ({"context_length": 1048576}, [True, True, True, False, False, False, True, False]),
        ({"attention.indexer.types": [1, 0, 0, 1, 0, 0, 0, 1]}, [True, False, False, True,
                                                                   False, False, False, True]),
    ],
)  # fmt: skip
def test_glm_dsa_indexer_types(tmp_path: Path, extra: dict[str, Any], layers: list[bool]) -> None:
    arch = _meta(tmp_path, "glm-dsa", _deepseek("glm-dsa", 8, **extra))
    assert arch.indexer_layers == layers


def test_dots3note_reads_the_first_block_count_indexer_types(tmp_path: Path) -> None:
    """llama.cpp's get_arr takes an array of any length up to LLAMA_MAX_LAYERS."""
    keys = _deepseek("dots3note", 4, **{"attention.indexer.types": [1, 0, 1, 1, 1, 1],
                                        "attention.sliding_window": 128,
                                        "attention.sliding_window_pattern": [0, 1, 0, 1]})  # fmt: skip
    assert _meta(tmp_path, "dots3note", keys).indexer_layers == [True, False, True, True]


def test_minimax_m3_indexer_keeps_a_value_row(tmp_path: Path) -> None:
    keys = _deepseek("minimax-m3", 4, leading_dense_block_count=1)
    keys.update({"attention.head_count_kv": 4, "attention.key_length": 64,
                 "attention.value_length": 48})  # fmt: skip
    arch = _meta(tmp_path, "minimax-m3", keys)
    assert not arch.mla
    assert (arch.indexer_k, arch.indexer_v, arch.indexer_layers) == (32, 48, [False] + [True] * 3)


@pytest.mark.parametrize(
    ("arch", "extra", "message"),
    [
        ("deepseek32", {"nextn_predict_layers": 4}, "nextn_predict_layers is 4"),
        ("glm-dsa", {"attention.indexer.types": [1, 0, 1]}, "has 3 entries"),
        ("dots3note", {"attention.sliding_window": 0}, "indexer.types is missing"),
        ("dots3note", {"attention.indexer.types": [1] * 513}, "more than LLAMA_MAX_LAYERS"),
    ],
)
def test_hostile_indexer_keys_are_refused(
    tmp_path: Path, arch: str, extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(GGUFReadError, match=message):
        _meta(tmp_path, arch, _deepseek(arch, 4, **extra))


def ssm_keys(n_layer: int) -> dict[str, Any]:
    return {
        "block_count": n_layer,
        "embedding_length": 64,
        "context_length": 1048576,
        "ssm.conv_kernel": 4,
        "ssm.inner_size": 128,
        "ssm.state_size": 16,
        "ssm.group_count": 1,
        "ssm.time_step_rank": 4,
        "vocab_size": 8,
    }


# ((d_conv - 1) * (d_inner + 2 * n_group * d_state) + d_state * d_inner) * 4 bytes
SSM_LAYER_BYTES = ((4 - 1) * (128 + 2 * 1 * 16) + 16 * 128) * 4


def test_mamba2_every_layer_recurrent(tmp_path: Path) -> None:
    tensors: list[TensorSpec] = [("token_embd.weight", "F32", (64, 8))]
    tensors += [(f"blk.{il}.ssm_norm.weight", "F32", (128,)) for il in range(2)]
    facts = facts_from_gguf(write_gguf(tmp_path / "m2.gguf", Spec("mamba2", ssm_keys(2), tensors)))
    arch = facts.arch
    assert SSM_LAYER_BYTES == 10112
    assert arch.n_head_kv == [0, 0]
    assert arch.recurrent_state_bytes_per_seq == 2 * SSM_LAYER_BYTES
    assert arch.tied_embeddings and arch.n_head == 1
    assert facts.weights.block_bytes == [512, 512]


def test_hybrid_recurrent_layers_have_no_kv(tmp_path: Path) -> None:
    keys = {**ssm_keys(4), "attention.head_count": 4, "attention.head_count_kv": [0, 2, 0, 0]}
    tensors: list[TensorSpec] = [
        ("token_embd.weight", "F32", (64, 8)),
        ("output.weight", "F32", (64, 8)),
    ]
    facts = facts_from_gguf(write_gguf(tmp_path / "h.gguf", Spec("granitehybrid", keys, tensors)))
    assert facts.arch.n_head_kv == [0, 2, 0, 0]
    assert facts.arch.recurrent_state_bytes_per_seq == 3 * SSM_LAYER_BYTES
    assert facts.arch.head_dim_k == 16


def _hybrid(tmp_path: Path, arch: str, extra: dict[str, Any], n_layer: int = 8) -> Any:
    keys = {**ssm_keys(n_layer), "attention.head_count": 4, "attention.head_count_kv": 2, **extra}
    tensors: list[TensorSpec] = [("token_embd.weight", "F32", (64, 8))]
    return _arch_of(tmp_path, Spec(arch, keys, tensors), f"{arch}.gguf")


def test_qwen35_keeps_every_fourth_layer_for_attention(tmp_path: Path) -> None:
    """Qwen3.5/Qwen3-Next state head_count_kv for every layer, but llama.cpp's loader makes
    three of four layers gated delta nets (full_attention_interval 4): only the fourth holds
    KV cells, the others a recurrent state. Counting KV on all of them was 4x the cache."""
    a = _hybrid(tmp_path, "qwen35", {})
    assert a.n_head_kv == [0, 0, 0, 2] * 2
    assert a.recurrent_state_bytes_per_seq == 6 * SSM_LAYER_BYTES
    listed = _hybrid(
        tmp_path, "qwen3next", {"attention.recurrent_layers": [True, False] * 4}
    )  # the file's list wins over the interval
    assert listed.n_head_kv == [0, 2] * 4
    assert listed.recurrent_state_bytes_per_seq == 4 * SSM_LAYER_BYTES
    every_other = _hybrid(tmp_path, "qwen35moe", {"full_attention_interval": 2})
    assert every_other.n_head_kv == [0, 2] * 4


def test_nemotron_h_mlp_layers_are_not_recurrent(tmp_path: Path) -> None:
    a = _hybrid(
        tmp_path, "nemotron_h",
        {"attention.head_count_kv": [0, 0, 2, 0], "feed_forward_length": [0, 64, 0, 64]},
        n_layer=4,
    )  # fmt: skip
    # layer 0 is a Mamba layer, 1 and 3 MLP-only, 2 attention
    assert a.recurrent_state_bytes_per_seq == 1 * SSM_LAYER_BYTES


def test_rwkv_holds_a_state_and_no_kv(tmp_path: Path) -> None:
    keys = {"block_count": 3, "embedding_length": 64, "context_length": 1048576,
            "attention.head_count": 0, "wkv.head_size": 16, "vocab_size": 8}  # fmt: skip
    tensors: list[TensorSpec] = [("token_embd.weight", "F32", (64, 8))]
    a = _arch_of(tmp_path, Spec("rwkv7", keys, tensors), "rwkv.gguf")
    assert a.n_head_kv == [0, 0, 0]
    # token shift (2 rows of n_embd) and an n_embd x head_size state, f32, per layer
    assert a.recurrent_state_bytes_per_seq == 3 * 4 * (2 * 64 + 64 * 16)


def test_kimi_delta_attention_state(tmp_path: Path) -> None:
    a = _hybrid(
        tmp_path, "kimi-linear",
        {"attention.head_count_kv": [0, 0, 0, 2], "kda.head_dim": 32, "ssm.inner_size": 0,
         "ssm.state_size": 0},
        n_layer=4,
    )  # fmt: skip
    # Q, K and V convolutions (3 x (d_conv - 1) x heads x head_dim), a head_dim^2 state a head
    assert a.recurrent_state_bytes_per_seq == 3 * 4 * (3 * 3 * 4 * 32 + 32 * 32 * 4)


def test_lfm2_short_convolution_state(tmp_path: Path) -> None:
    a = _hybrid(
        tmp_path, "lfm2",
        {"attention.head_count_kv": [0, 2, 0, 2], "shortconv.l_cache": 3, "ssm.inner_size": 0,
         "ssm.state_size": 0},
        n_layer=4,
    )  # fmt: skip
    assert a.recurrent_state_bytes_per_seq == 2 * 4 * (64 * 2)


def test_minimax01_lightning_attention_state(tmp_path: Path) -> None:
    a = _hybrid(
        tmp_path, "minimax-01",
        {"attention.key_length": 16, "attention.value_length": 16, "ssm.conv_kernel": 0,
         "ssm.inner_size": 0, "ssm.state_size": 0},
    )  # fmt: skip
    assert a.n_head_kv == [0] * 7 + [2]  # full attention every 8th layer
    assert a.recurrent_state_bytes_per_seq == 7 * 4 * (16 * 16 * 4)


def test_falcon_h1_runs_attention_and_an_ssm_on_every_layer(tmp_path: Path) -> None:
    a = _hybrid(tmp_path, "falcon-h1", {}, n_layer=4)
    assert a.n_head_kv == [2] * 4 and a.recurrent_layers == [True] * 4
    assert a.recurrent_state_bytes_per_seq == 4 * SSM_LAYER_BYTES


def test_a_hybrid_without_head_count_kv_has_as_many_kv_heads_as_query_heads(
    tmp_path: Path,
) -> None:
    """llama.cpp's default for a missing head_count_kv is n_head, recurrent or not: 0 would
    plan no KV at all for the attention layers."""
    keys = {**ssm_keys(8), "attention.head_count": 4}
    tensors: list[TensorSpec] = [("token_embd.weight", "F32", (64, 8))]
    a = _arch_of(tmp_path, Spec("qwen35", keys, tensors), "q35-nokv.gguf")
    assert a.n_head_kv == [0, 0, 0, 4] * 2


def test_a_scalar_recurrent_layers_key_covers_every_layer(tmp_path: Path) -> None:
    a = _hybrid(tmp_path, "qwen3next", {"attention.recurrent_layers": 0}, n_layer=4)
    assert a.n_head_kv == [2] * 4 and a.recurrent_state_bytes_per_seq == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"full_attention_interval": 0}, "full_attention_interval is 0"),
        ({"attention.recurrent_layers": [True, False, True]}, "not one per layer"),
        ({"attention.shared_kv_layers": 2**32 - 1}, "shared_kv_layers"),
        ({"attention.key_length_swa": 0}, "sliding-window key/value length is 0"),
    ],
)
def test_hostile_layout_keys_are_refused_with_one_line(
    tmp_path: Path, extra: dict[str, Any], message: str
) -> None:
    arch = "gemma4" if "shared_kv_layers" in str(extra) else "qwen35"
    keys = {**ssm_keys(8), "attention.head_count": 4, "attention.head_count_kv": 2, **extra}
    if arch == "gemma4":
        keys["attention.sliding_window"] = 512
        keys["attention.sliding_window_pattern"] = [True, False] * 4
    tensors: list[TensorSpec] = [("token_embd.weight", "F32", (64, 8))]
    with pytest.raises(GGUFReadError, match=message):
        facts_from_gguf(write_gguf(tmp_path / "bad.gguf", Spec(arch, keys, tensors)))


def split_parts(tmp_path: Path, spec: Spec, n: int) -> list[Path]:
    """Write `spec` as an n-part split set: keys in part 1, tensors dealt round-robin."""
    paths = []
    for i in range(n):
        part = Spec(
            spec.arch,
            spec.keys if i == 0 else {},
            spec.tensors[i::n],
            dict(spec.general) if i == 0 else {},
        )
        part.general |= {"split.no": i, "split.count": n, "split.tensors.count": len(spec.tensors)}
        paths.append(write_gguf(tmp_path / f"tiny-Q4_K_M-{i + 1:05d}-of-{n:05d}.gguf", part))
    return paths


def test_split_set_merges_tensor_tables(tmp_path: Path) -> None:
    whole = facts_from_gguf(write_gguf(tmp_path / "whole.gguf", llama_spec()))
    paths = split_parts(tmp_path, llama_spec(), 3)
    merged = facts_from_gguf_parts(paths)
    assert merged.arch == whole.arch
    assert merged.quant == whole.quant
    w = merged.weights
    assert w.block_bytes == whole.weights.block_bytes
    assert w.cpu_repack_bytes == whole.weights.cpu_repack_bytes
    assert (w.token_embd_bytes, w.output_bytes) == (
        whole.weights.token_embd_bytes,
        whole.weights.output_bytes,
    )
    assert w.file_bytes == sum(p.stat().st_size for p in paths)
    with pytest.raises(GGUFReadError, match=r"split\.count"):
        facts_from_gguf_parts(paths[:2])


def test_not_a_gguf(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"<html>not found</html>" * 10)
    with pytest.raises(GGUFReadError) as info:
        facts_from_gguf(path)
    assert str(path) in info.value.message()


@pytest.mark.parametrize("keep", [0, 10, 600, -100])
def test_truncated_or_empty(tmp_path: Path, keep: int) -> None:
    data = write_gguf(tmp_path / "full.gguf", llama_spec()).read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:keep])
    with pytest.raises(GGUFReadError):
        facts_from_gguf(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GGUFReadError, match="no such file"):
        facts_from_gguf(tmp_path / "absent.gguf")


def test_local_facts_are_remembered_until_the_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """resolve reads a local GGUF's header once; a rewritten file is read again."""
    import os

    from deployer.adapters import gguf_files
    from deployer.adapters.local_models import LocalModelFiles
    from deployer.core.model import resolve

    path = write_gguf(tmp_path / "tiny-Q4_K_M.gguf", llama_spec())
    reads: list[int] = []
    real = gguf_files.facts_from_gguf_parts

    def counting(*args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(gguf_files, "facts_from_gguf_parts", counting)
    first = resolve.resolve_model(str(path), None, local=LocalModelFiles())
    again = resolve.resolve_model(str(path), None, local=LocalModelFiles())
    assert len(reads) == 1 and again == first == real([path], source=str(path))
    # A different model written at the same path: new size and mtime, so a new read.
    write_gguf(path, llama_spec(n_layer=3))
    os.utime(path, ns=(1, 1))
    third = resolve.resolve_model(str(path), None, local=LocalModelFiles())
    assert len(reads) == 2 and third.arch.n_layer == 3 != first.arch.n_layer


def test_memo_that_no_longer_validates_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from deployer.adapters import filememo
    from deployer.adapters.local_models import LocalModelFiles
    from deployer.core.model import resolve

    path = write_gguf(tmp_path / "tiny-Q4_K_M.gguf", llama_spec())
    fresh = resolve.resolve_model(str(path), None, local=LocalModelFiles())
    (entry,) = (filememo.cache_dir() / "memo" / "gguf-facts").glob("*.json")
    data = json.loads(entry.read_text())
    data["value"]["arch"]["n_layer"] = "not a number"
    entry.write_text(json.dumps(data))
    assert resolve.resolve_model(str(path), None, local=LocalModelFiles()) == fresh


def test_chat_template_presence_is_read(tmp_path: Path) -> None:
    bare = llama_spec()
    assert not facts_from_gguf(write_gguf(tmp_path / "bare-Q4_K_M.gguf", bare)).has_chat_template
    spec = llama_spec()
    spec.general["tokenizer.chat_template"] = "{{ messages[0]['content'] }}"
    with_tpl = facts_from_gguf(write_gguf(tmp_path / "chat-Q4_K_M.gguf", spec))
    assert with_tpl.has_chat_template


def test_bpe_merges_are_counted(tmp_path: Path) -> None:
    # llama.cpp keeps every merge rule in a hash table: the host overhead counts them.
    spec = llama_spec()
    spec.general = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": [f"t{i}" for i in range(VOCAB)],
        "tokenizer.ggml.merges": [f"t {i}" for i in range(1234)],
    }
    assert facts_from_gguf(write_gguf(tmp_path / "bpe.gguf", spec)).arch.n_merges == 1234
    assert facts_from_gguf(write_gguf(tmp_path / "spm.gguf", llama_spec())).arch.n_merges == 0
    # A SentencePiece file that carries merges anyway: llama.cpp never reads them.
    spec.general["tokenizer.ggml.model"] = "llama"
    assert facts_from_gguf(write_gguf(tmp_path / "spm-m.gguf", spec)).arch.n_merges == 0


def test_merges_of_another_type_are_refused(tmp_path: Path) -> None:
    spec = llama_spec()
    spec.general = {**tokens(VOCAB), "tokenizer.ggml.merges": [1, 2, 3]}
    spec.general["tokenizer.ggml.model"] = "gpt2"
    with pytest.raises(GGUFReadError, match=r"tokenizer\.ggml\.merges is ARRAY\[INT32\]"):
        facts_from_gguf(write_gguf(tmp_path / "bad.gguf", spec))
    # ... where llama.cpp reads them; a SentencePiece file's are ignored, as llama.cpp does.
    spec.general["tokenizer.ggml.model"] = "llama"
    assert facts_from_gguf(write_gguf(tmp_path / "ok.gguf", spec)).arch.n_merges == 0


def _dsv4(**extra: Any) -> dict[str, Any]:
    keys: dict[str, Any] = {
        "block_count": 4, "embedding_length": 128, "attention.head_count": 4,
        "attention.head_count_kv": 1, "attention.key_length": 64, "attention.value_length": 64,
        "context_length": 65536, "vocab_size": 16, "attention.sliding_window": 128,
        "attention.indexer.key_length": 128, "hyper_connection.count": 4,
        "attention.compress_ratios": [0, 4, 128, 4, 0],
    }  # fmt: skip
    keys.update(extra)
    return keys


def test_deepseek4_slides_every_layer_and_compresses(tmp_path: Path) -> None:
    """llama.cpp's DeepSeek 4 loader slides every layer whatever the file's pattern says, and
    reads one compress ratio per layer (an MTP layer's may follow: ignored)."""
    arch = _meta(tmp_path, "deepseek4", _dsv4(**{"attention.sliding_window_pattern": [0] * 4}))
    assert (arch.sliding_window, arch.swa_layers) == (128, [True] * 4)
    assert arch.compress_ratios == [0, 4, 128, 4]
    assert (arch.indexer_k, arch.indexer_layers, arch.hyper_connections) == (128, [], 4)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"attention.compress_ratios": [0, 4, 128]}, "has 3 entries; block_count is 4"),
        ({"attention.compress_ratios": [0, 4, 8, 4]}, "has 8; llama.cpp takes 0, 4, 128"),
        ({"attention.compress_ratios": 4}, "compress_ratios is missing"),
        ({"attention.sliding_window": 0}, "sliding_window is missing or 0"),
    ],
)
def test_hostile_deepseek4_keys_are_refused(
    tmp_path: Path, extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(GGUFReadError, match=message):
        _meta(tmp_path, "deepseek4", _dsv4(**extra))


@pytest.mark.parametrize(
    ("arch", "kv_last", "held_last"),
    [
        ("glm4moe", 0, 0),
        ("qwen35", 0, 0),
        ("nemotron_h", 0, 0),  # a block with a feed-forward is no attention layer there
        # HY-V3 skips only the block's attention and norms: its feed-forward is loaded
        (
            "hy_v3",
            0,
            nbytes("Q4_K", (256, 512)) + nbytes("Q4_0", (256, 516)) + nbytes("Q6_K", (512, 256)),
        ),
        ("graniteswitch", 1, BLOCK_BYTES),
    ],
)
def test_mtp_blocks_hold_no_weights_and_mostly_no_cache(
    tmp_path: Path, arch: str, kv_last: int, held_last: int
) -> None:
    """The last nextn_predict_layers blocks are MTP heads: most loaders skip their tensors
    unless MTP drafting is asked for (HY-V3's skips only its attention and norms), and
    most main contexts leave them out of the cache (not the Nemotron-H hybrid's); Granite
    Switch's count names the one-head router layer it appends, which the trunk attends."""
    spec = llama_spec(n_layer=4)
    spec = Spec(arch, {**spec.keys, "nextn_predict_layers": 1}, spec.tensors, spec.general)
    facts = facts_from_gguf(write_gguf(tmp_path / "m.gguf", spec))
    assert facts.weights.block_bytes == [BLOCK_BYTES] * 3 + [held_last]
    assert facts.arch.n_head_kv[3] == kv_last
    assert facts.arch.nextn_layers == (0 if arch == "graniteswitch" else 1)
    # the skipped block is cold: never read, though a fault beside it may pull some in
    plain = facts_from_gguf(write_gguf(tmp_path / "p.gguf", Spec(arch, {**spec.keys,
                            "nextn_predict_layers": 0}, spec.tensors, spec.general)))  # fmt: skip
    more = facts.weights.readaround_cold_bytes[-1] - plain.weights.readaround_cold_bytes[-1]
    assert (more > 0) == (held_last < BLOCK_BYTES)  # its skipped tensors were hot


def test_granite_switch_appends_a_router_layer(tmp_path: Path) -> None:
    """A Granite Switch file as converted (no nextn key): llama.cpp appends a router layer,
    one KV head over the whole context, that the trunk attends; the plan counts its cache."""
    spec = llama_spec(n_layer=3)
    facts = facts_from_gguf(write_gguf(tmp_path / "g.gguf", Spec("graniteswitch", spec.keys,
                                                                 spec.tensors, spec.general)))  # fmt: skip
    assert facts.arch.n_layer == 4 and facts.arch.n_head_kv == [2, 2, 2, 1]
    assert facts.weights.block_bytes == [BLOCK_BYTES] * 3 + [0]


def test_only_stacked_experts_repack_in_three_dimensions() -> None:
    """ggml-cpu repacks a 2-D weight of a MUL_MAT or a 3-D one of a MUL_MAT_ID (experts); an
    MLA file's 3-D attn_v_b, a plain MUL_MAT, stays in the mapping (15 MiB over on
    DeepSeek-V2-Lite before)."""
    tensors = [
        TensorInfo("blk.0.attn_v_b.weight", "Q4_K", (512, 128, 16), 1000),
        TensorInfo("blk.0.ffn_up_exps.weight", "Q4_K", (2048, 1408, 64), 5000),
        TensorInfo("blk.0.ffn_up_shexp.weight", "Q4_K", (2048, 2816), 700),
    ]
    layout = layout_from_tensors(tensors, 1, 6700)
    assert layout.cpu_repack_bytes == [5700] and layout.block_bytes == [6700]


def test_per_layer_embeddings_are_an_input_table() -> None:
    """per_layer_token_embd (Gemma 3n) is looked up like token_embd, not placed with the
    output layer, and is cold in the mapping."""
    tensors = [
        TensorInfo("token_embd.weight", "Q8_0", (256, 300), 100),
        TensorInfo("per_layer_token_embd.weight", "Q8_0", (2 * 256, 300), 4000),
        TensorInfo("blk.0.attn_q.weight", "Q8_0", (256, 256), 50),
        TensorInfo("per_layer_model_proj.weight", "Q8_0", (256, 512), 30),
        TensorInfo("output_norm.weight", "F32", (256,), 10),
    ]
    layout = layout_from_tensors(tensors, 1, 4190)
    assert (layout.token_embd_bytes, layout.input_bytes, layout.output_bytes) == (100, 4000, 110)
    assert layout.block_bytes == [80]  # the projection is created with block 0, and sits there
    assert layout.tensor_bytes == 4190  # every tensor of the file, output_norm included
    assert layout.readaround_cold_bytes[-1] == 4000  # the tied token_embd is read: hot


def test_per_layer_input_width_is_read_off_the_table(tmp_path: Path) -> None:
    spec = llama_spec(n_layer=2)
    tensors = [*spec.tensors, ("per_layer_token_embd.weight", "Q8_0", (2 * 256, VOCAB))]
    facts = facts_from_gguf(write_gguf(tmp_path / "p.gguf", Spec("llama", spec.keys, tensors,
                                                                 spec.general)))  # fmt: skip
    assert facts.arch.n_embd_input_extra == 512
    assert facts.weights.input_bytes == nbytes("Q8_0", (512, VOCAB))


@pytest.mark.parametrize(
    ("names", "kind", "want"),
    [
        (["token_embd.weight"], "Q4_0", 8000),  # tied: the duplicate output is repacked
        (["token_embd.weight"], "Q6_K", 0),  # the usual tied table: not a repacked type
        (["token_embd.weight", "output.weight"], "Q4_K", 8000),  # untied: output.weight
    ],
)
def test_the_output_matrix_repacks_when_its_type_does(
    names: list[str], kind: str, want: int
) -> None:
    tensors = [TensorInfo(n, kind, (256, 1024), 8000) for n in names]
    tensors.append(TensorInfo("blk.0.attn_q.weight", "Q8_0", (256, 256), 50))
    layout = layout_from_tensors(tensors, 1, 16050)
    assert layout.output_repack_bytes == want


def _moe_spec(arch: str) -> Spec:
    """A 3-block MoE: block 0 dense (feed_forward_length 1024), blocks 1-2 with 4 experts 128
    wide and a 384-wide shared expert."""
    spec = llama_spec(n_layer=3)
    tensors = [t for t in spec.tensors if not t[0].startswith(("blk.1.ffn", "blk.2.ffn"))]
    for il in (1, 2):
        p = f"blk.{il}."
        tensors += [
            (p + "ffn_gate_inp.weight", "F32", (EMBD, 4)),
            (p + "ffn_up_exps.weight", "F32", (EMBD, 128, 4)),
            (p + "ffn_down_exps.weight", "F32", (128, EMBD, 4)),
            (p + "ffn_up_shexp.weight", "F32", (EMBD, 384)),
        ]
    tensors = [(n, t, (EMBD, 1024) if n == "blk.0.ffn_up.weight" else s) for n, t, s in tensors]
    keys = {**spec.keys, "expert_count": 4, "expert_used_count": 2}
    return Spec(arch, keys, tensors, spec.general)


def test_an_moes_dense_and_shared_feed_forwards_and_routed_experts_come_from_its_tensors(
    tmp_path: Path,
) -> None:
    """The widest dense feed-forward (block 0's ffn_up rows) and the shared expert's width
    size the compute buffer; the routed experts' bytes, block by block, size a decode step."""
    facts = facts_from_gguf(write_gguf(tmp_path / "m.gguf", _moe_spec("qwen2moe")))
    assert (facts.arch.n_ff_dense, facts.arch.n_ff_shared) == (1024, 384)
    experts = nbytes("F32", (EMBD, 128, 4)) + nbytes("F32", (128, EMBD, 4))
    assert facts.weights.expert_bytes == [0, experts, experts]
    dense = facts_from_gguf(write_gguf(tmp_path / "d.gguf", llama_spec()))
    assert (dense.arch.n_ff_dense, dense.arch.n_ff_shared) == (0, 0)  # a dense model's own ff
    assert dense.weights.expert_bytes == [0, 0]


@pytest.mark.parametrize(
    ("mapping", "problem"),
    [
        (["a", "b"], "needs UINT32 or INT32 items"),  # llama.cpp: wrong array element type
        ([0] * 513, "has 513 entries"),  # more than LLAMA_MAX_LAYERS
        ([0, 500], "maps to input 500 of 2"),  # "Invalid deepstack index"
    ],
)
def test_a_deepstack_mapping_llama_cpp_refuses_is_refused_in_one_line(
    tmp_path: Path, mapping: list[Any], problem: str
) -> None:
    spec = llama_spec()
    keys = {**spec.keys, "logit_scale": 1, "deepstack_mapping": mapping}
    with pytest.raises(GGUFReadError, match=problem):
        facts_from_gguf(write_gguf(tmp_path / "m.gguf", Spec("granite", keys, spec.tensors)))


@pytest.mark.parametrize(
    ("arch", "keys", "expected"),
    [
        ("qwen3vl", {"n_deepstack_layers": 2}, 2),
        ("qwen3vlmoe", {}, 0),
        ("granite", {"deepstack_mapping": [-1, 0, 0, 1, -1]}, 2),  # INT32: distinct, not -1
        ("llama", {"deepstack_mapping": [0, 1]}, 0),  # a key its loader does not read
    ],
)
def test_deepstack_inputs_widen_the_input_row(
    tmp_path: Path, arch: str, keys: dict[str, Any], expected: int
) -> None:
    spec = llama_spec()
    spec = Spec(arch, {**spec.keys, "logit_scale": 1, **keys}, spec.tensors, spec.general)
    assert facts_from_gguf(write_gguf(tmp_path / "m.gguf", spec)).arch.n_deepstack == expected


def test_embedding_models_get_no_cache_and_mtp_biases_follow_their_loader(tmp_path: Path) -> None:
    """BERT-style encoders have no KV cache (llama.cpp creates no memory for them), whatever
    their heads say. An MTP block's expert bias is loaded by DeepSeek 3.2's and GLM-5's
    loaders only (without the skip flag); the others skip it with the block."""
    from deployer.core.fit.memory import FitSettings, checkpoint_bytes, kv_bytes

    spec = llama_spec()
    bert = facts_from_gguf(write_gguf(tmp_path / "b.gguf", Spec("bert", spec.keys, spec.tensors,
                                                                spec.general)))  # fmt: skip
    s = FitSettings(ctx=8192, parallel=2)
    assert bert.arch.no_memory and kv_bytes(bert.arch, range(2), s) == 0
    assert checkpoint_bytes(bert.arch, s) == 0
    assert not facts_from_gguf(write_gguf(tmp_path / "l.gguf", spec)).arch.no_memory
    # an MTP block (the last of two) with its expert bias, read as the loader reads it
    tensors: list[TensorSpec] = [("token_embd.weight", "F32", (128, 16))]
    tensors += [(f"blk.{il}.attn_norm.weight", "F32", (128,)) for il in (0, 1)]
    tensors += [("blk.1.exp_probs_b.bias", "F32", (8,))]
    for arch, held in (("deepseek32", 32), ("glm-dsa", 32), ("deepseek2", 0), ("glm4moe", 0)):
        keys = _deepseek(arch, 2, nextn_predict_layers=1)
        if arch == "glm4moe":  # not an MLA loader: plain heads
            keys |= {"attention.head_count_kv": 4}
        path = write_gguf(tmp_path / f"{arch}.gguf", Spec(arch, keys, tensors))
        assert facts_from_gguf(path).weights.block_bytes[1] == held, arch


def test_nemotron_h_attends_only_on_layers_without_a_feed_forward(tmp_path: Path) -> None:
    """Nemotron-H's layers are Mamba (no KV heads, no feed-forward), attention (KV heads, no
    feed-forward) or MLP; its attention filter takes !recurrent && n_ff == 0, so a layer with
    both KV heads and a feed-forward (an MTP block) gets no KV cells."""
    keys = {
        "block_count": 4, "embedding_length": 128, "context_length": 4096,
        "attention.head_count": [0, 4, 0, 4], "attention.head_count_kv": [0, 2, 0, 2],
        "feed_forward_length": [0, 0, 256, 256], "ssm.conv_kernel": 4, "ssm.inner_size": 256,
        "ssm.state_size": 16, "ssm.group_count": 1, "ssm.time_step_rank": 4,
    }  # fmt: skip
    arch = _meta(tmp_path, "nemotron_h", keys)
    assert arch.n_head_kv == [0, 2, 0, 0]
    assert arch.recurrent_layers == [True, False, False, False]


@pytest.mark.parametrize("loops", [1, 2, 3])
def test_a_looped_nanbeige_caches_every_pass(tmp_path: Path, loops: int) -> None:
    """Nanbeige's loader runs its blocks num_loops times, each pass a layer of its own KV cells
    sharing the blocks' weights (src/models/nanbeige.cpp): the plan counts the passes' cache
    and the blocks' weights once."""
    spec = llama_spec(n_layer=2)
    keys = {**spec.keys, "num_loops": loops}
    model = write_gguf(tmp_path / "m.gguf", Spec("nanbeige", keys, spec.tensors, spec.general))
    facts = facts_from_gguf(model)
    assert facts.arch.n_layer == 2 * loops and facts.arch.n_head_kv == [2] * (2 * loops)
    plain = facts_from_gguf(write_gguf(tmp_path / "p.gguf", Spec("nanbeige", spec.keys,
                                                                 spec.tensors, spec.general)))  # fmt: skip
    assert sum(facts.weights.block_bytes) == sum(plain.weights.block_bytes)
    assert facts.weights.block_bytes[2:] == [0] * (2 * loops - 2)


@pytest.mark.parametrize(("blocks", "loops", "expected"), [
    (2, 0, "num_loops is 0"), (200, 3, "200 blocks x 3 loops exceed LLAMA_MAX_LAYERS"),
])  # fmt: skip
def test_a_looped_nanbeige_past_llama_cpps_bounds_is_refused(
    tmp_path: Path, blocks: int, loops: int, expected: str
) -> None:
    spec = llama_spec(n_layer=blocks)
    keys = {**spec.keys, "num_loops": loops}
    model = write_gguf(tmp_path / "m.gguf", Spec("nanbeige", keys, spec.tensors, spec.general))
    with pytest.raises(GGUFReadError, match=expected):
        facts_from_gguf(model)


@pytest.mark.parametrize(("heads", "refused"), [(2, False), (4, True), (2**32 - 1, True)])
def test_minimax_m3_needs_one_indexer_head_per_kv_group(
    tmp_path: Path, heads: int, refused: bool
) -> None:
    """MiniMax-M3's sparse attention asserts one indexer head per KV head group
    (minimax-m3.cpp): any other count is refused in one line, and the plan's per-head mask
    term never multiplies by a header's number unchecked."""
    spec = llama_spec(n_layer=2)
    keys = {**spec.keys, "attention.indexer.head_count": heads,
            "attention.indexer.key_length": 64, "attention.indexer.top_k": 64}  # fmt: skip
    model = write_gguf(tmp_path / "m.gguf", Spec("minimax-m3", keys, spec.tensors, spec.general))
    if refused:
        with pytest.raises(GGUFReadError, match="one per KV head group"):
            facts_from_gguf(model)
    else:
        assert facts_from_gguf(model).arch.indexer_layers == [True, True]


@pytest.mark.parametrize(
    ("blocks", "size", "checkpoints"),
    [(4, 2, 2), (5, 2, 3), (5, 8, 1), (5, 2**32 - 1, 1), (5, 0, 0)],
)
def test_kimi_k3_banks_a_layer_input_every_block(
    tmp_path: Path, blocks: int, size: int, checkpoints: int
) -> None:
    """Kimi-K3 banks the input of every attn_res.block_size-th layer, the first included
    (kimi-k3.cpp: il % size == 0): ceil(layers / size) checkpoints."""
    spec = llama_spec(n_layer=blocks)
    keys = {**spec.keys, "attn_res.block_size": size}
    model = write_gguf(tmp_path / "m.gguf", Spec("kimi-k3", keys, spec.tensors, spec.general))
    assert facts_from_gguf(model).arch.residual_checkpoints == checkpoints


def test_a_looped_nanbeige_file_with_more_blocks_than_it_states_is_refused(tmp_path: Path) -> None:
    """num_loops repeats the file's blocks: a tensor past block_count is one llama.cpp never
    loads, whatever the loops (the plan must not count it as a later pass's)."""
    spec = llama_spec(n_layer=4)
    keys = {**spec.keys, "block_count": 2, "num_loops": 2}
    model = write_gguf(tmp_path / "m.gguf", Spec("nanbeige", keys, spec.tensors, spec.general))
    with pytest.raises(GGUFReadError, match=r"blk\.2\..* is beyond block_count 2"):
        facts_from_gguf(model)


@pytest.mark.parametrize(("types", "refused"), [([1, 0], False), ([0, 1], True), (0, True)])
def test_a_glm5_indexer_table_must_start_with_a_full_layer(
    tmp_path: Path, types: list[int] | int, refused: bool
) -> None:
    """GLM-5's shared indexer layers reuse the last full layer's selection; llama-server
    aborts on a table whose first layer is shared, or all (glm-dsa.cpp: prev_top_k asserted)."""
    spec = llama_spec(n_layer=2)
    keys = {**spec.keys, "attention.indexer.types": types, "attention.indexer.key_length": 64,
            "attention.indexer.head_count": 4, "attention.indexer.top_k": 64}  # fmt: skip
    model = write_gguf(tmp_path / "m.gguf", Spec("glm-dsa", keys, spec.tensors, spec.general))
    if refused:
        with pytest.raises(GGUFReadError, match="needs a full indexer layer first"):
            facts_from_gguf(model)
    else:
        assert facts_from_gguf(model).arch.indexer_layers == [True, False]
