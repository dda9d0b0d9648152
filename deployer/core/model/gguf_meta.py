"""Read ModelFacts from a GGUF header: architecture keys and the exact tensor table.

Only the header is touched (key/values and tensor infos); tensor data stay unread, so a sparse
file holding just the header bytes of a remote model reads the same as the full file.

This is where header values become facts, once: every value the planner uses is checked here
against what llama.cpp accepts (src/llama-hparams.h, src/llama-model.cpp load_hparams and
src/llama-model-loader.cpp of the pinned build 11434), so fit and plan can rely on ModelFacts.
A header that fails is refused in one GGUFReadError line naming the key and the limit.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from deployer.core.errors import GGUFReadError
from deployer.core.model.facts import (
    LLAMA_MAX_EXPERTS,
    LLAMA_MAX_LAYERS,
    READAROUND_WINDOWS,
    U32_MAX,
    ModelArch,
    ModelFacts,
    WeightLayout,
)
from deployer.core.model.gguf_header import (
    ARRAY,
    BOOL,
    FLOAT32,
    INT32,
    INT_TYPES,
    STRING,
    UINT32,
    GGUFHeader,
    HeaderError,
    KeyValue,
    check_complete,
)
from deployer.core.untrusted import CONTROL_RE, TEMPLATE_RE, shown

# ggml types the x86 (AVX2) CPU backend of the pinned llama.cpp repacks into an interleaved copy
# (the CPU_REPACK buffer) when a matmul weight's row count divides by 8
# (ggml-cpu/repack.cpp, ggml_repack_get_optimal_repack_type). Matched the demo model's logged
# CPU_REPACK buffer to the byte. ARM (NEON/i8mm) repacks more types; AVX-512 adds Q2_K.
CPU_REPACK_TYPES: frozenset[str] = frozenset({"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"})
_REPACK_ROW_MULTIPLE = 8

# llama.cpp's enum llama_ftype (general.file_type), as labels without the MOSTLY_ prefix.
LLAMA_FTYPE_LABELS: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 4: "Q4_1_SOME_F16", 7: "Q8_0", 8: "Q5_0",
    9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S",
    15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS",
    21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S",
    27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    33: "Q4_0_4_4", 34: "Q4_0_4_8", 35: "Q4_0_8_8", 36: "TQ1_0", 37: "TQ2_0",
    38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0", 41: "Q2_0",
}  # fmt: skip
_FTYPE_GUESSED = 1024

# Which layers slide, per architecture, as the pinned llama.cpp's loaders set it
# (src/models/<arch>.cpp: load_swa_pattern(ml, N[, dense_first]) takes the file's
# sliding_window_pattern array, else its pattern number, else N; layer il slides when
# il % N < N - 1, or, dense first, when il % N != 0; N = 0: every layer). An architecture not
# listed never slides, whatever window its file states (llama.cpp leaves swa_type NONE, and the
# full cache is the safe count): e.g. phi3 reads a window and turns it off.
_SWA_PERIOD: dict[str, tuple[int, bool]] = {
    "gemma2": (2, False), "gpt-oss": (2, False), "gemma3": (6, False),
    "gemma-embedding": (6, False), "gemma3n": (5, False), "cohere2": (4, False),
    "cohere2moe": (4, True), "afmoe": (4, False), "exaone4": (4, False),
    "exaone-moe": (4, False), "laguna": (4, True), "llama4": (4, False), "mellum": (4, False),
    "modern-bert": (3, True), "muse-glimmer": (4, False), "olmo2": (4, False),
    "plamo3": (8, False), "smallthinker": (4, True),
}  # fmt: skip
# DeepSeek 4 slides every layer whatever its file says (set_swa_pattern(0)), beside compressed
# caches of its own (llama_kv_cache_dsv4: compress_ratios). Its DFlash drafts are not listed:
# full attention on every layer, the safe side.
_DSV4 = "deepseek4"
_DSV4_RATIOS = frozenset({0, 4, 128})
# Loaders that require the file's per-layer array (ml.get_arr, no default period).
_SWA_ARRAY_ONLY = frozenset(
    {"gemma4", "gemma4-assistant", "dots3note", "granite_swa", "maple", "mimo2", "step35",
     "spark2_5"}
)  # fmt: skip
# Hybrids whose attention layers (those with KV heads) all slide when a window is set.
_SWA_ATTENTION_LAYERS = frozenset({"lfm2"})  # not lfm2moe: its loader reads no window

# Loaders that repeat the file's blocks num_loops times, each pass a layer with its own cache.
_LOOPED_ARCHS = frozenset({"nanbeige"})

# Layers, from the first, that own a KV cache where llama.cpp's loader fixes it
# (llama_hparams::n_layer_kv_from_start): the later layers reuse the cache of the last earlier
# layer of their kind (Gemma 3n hard-codes 20; Gemma 4 reads attention.shared_kv_layers).
_KV_LAYERS_FIXED = {"gemma3n": 20}
_KV_SHARED_KEY_ARCHS = frozenset({"gemma4"})

# Keys llama.cpp reads with get_key_or_arr: one number, or one per layer (block_count of them).
_PER_LAYER_KEYS = frozenset(
    {
        "attention.head_count",
        "attention.head_count_kv",
        "feed_forward_length",
        "expert_feed_forward_length",
        "expert_used_count",
    }
)
# Items llama.cpp's get_arr takes for a per-layer uint32_t array.
_LAYER_ARRAY_ITEMS = frozenset({BOOL, UINT32, INT32})
# Float hparams llama.cpp reads (get_key<float>): (key, smallest allowed, inclusive).
_FLOAT_KEYS: tuple[tuple[str, float, bool], ...] = (
    ("rope.freq_base", 0.0, False),
    ("rope.freq_base_swa", 0.0, False),
    ("rope.scaling.factor", 0.0, True),
    ("attention.layer_norm_epsilon", 0.0, False),
    ("attention.layer_norm_rms_epsilon", 0.0, False),
)
# llama.cpp's architecture names (src/llama-arch.cpp): lowercase words, digits, '-', '_', '.'.
_ARCH_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_NAME_MAX = 128

_BLOCK_RE = re.compile(r"^blk\.(\d+)\.")


def _block_index(name: str) -> int:
    """The block a tensor belongs to (blk.N.*), or -1."""
    match = _BLOCK_RE.match(name)
    return int(match.group(1)) if match else -1


@dataclass(frozen=True)
class TensorInfo:
    """One tensor-table entry: what the layout needs."""

    name: str
    ggml_type: str
    shape: tuple[int, ...]
    n_bytes: int


def _int_value(key: str, field: KeyValue, hi: int, limit: str) -> int:
    """A UINT32 within 0..hi, or a one-line HeaderError naming what the key holds instead.

    llama.cpp reads hparams with get_key<uint32_t>, which accepts a UINT32 and nothing else
    (not a UINT64 or INT32 of the same value: "key ... has wrong type").
    """
    if field.type == ARRAY:
        raise HeaderError(f"{key} is {field.type_name}; llama.cpp needs a single UINT32")
    if field.type != UINT32:
        raise HeaderError(f"{key} is {field.type_name}; llama.cpp needs a UINT32")
    return _bounded(key, int(field.value), hi, limit)  # type: ignore[arg-type]


def _bounded(key: str, value: int, hi: int, limit: str) -> int:
    if value < 0:
        raise HeaderError(f"{key} {value} is negative")
    if value > hi:
        raise HeaderError(f"{key} {value} exceeds llama.cpp's limit of {hi}{limit}")
    return value


class _Keys:
    """Checked access to `<arch>.*` keys: every value within what llama.cpp accepts."""

    def __init__(self, header: GGUFHeader, arch: str) -> None:
        self._header, self._arch = header, arch

    def field(self, key: str) -> KeyValue | None:
        return self._header.kv.get(f"{self._arch}.{key}")

    def has(self, key: str) -> bool:
        return self.field(key) is not None

    def get_int(self, key: str, default: int = 0, *, hi: int = U32_MAX, limit: str = "") -> int:
        """A single number; per-layer keys give their largest value."""
        field = self.field(key)
        if field is None:
            return default
        if field.type == ARRAY and key in _PER_LAYER_KEYS:
            return max(self._items(key, field, None), default=default)
        return _int_value(f"{self._arch}.{key}", field, hi, limit)

    def per_layer(self, key: str, n_layer: int, default: int) -> list[int]:
        """One number per layer: an array of n_layer numbers, or one number repeated."""
        field = self.field(key)
        if field is None:
            return [default] * n_layer
        if field.type == ARRAY:
            return self._items(key, field, n_layer)
        return [_int_value(f"{self._arch}.{key}", field, U32_MAX, "")] * n_layer

    def _items(self, key: str, field: KeyValue, n_layer: int | None) -> list[int]:
        full = f"{self._arch}.{key}"
        if field.item_type not in _LAYER_ARRAY_ITEMS:
            raise HeaderError(f"{full} is {field.type_name}; llama.cpp needs UINT32 or INT32 items")
        wanted = n_layer if n_layer is not None else self.n_layer()
        if field.count != wanted or field.items is None:
            raise HeaderError(f"{full} has {field.count} entries, not one per layer ({wanted})")
        return [_bounded(full, int(v), U32_MAX, "") for v in field.items]

    def n_layer(self) -> int:
        field = self.field("block_count")
        if field is None:
            raise HeaderError(f"{self._arch}.block_count is missing")
        n = _int_value(f"{self._arch}.block_count", field, LLAMA_MAX_LAYERS, " (LLAMA_MAX_LAYERS)")
        if n == 0:
            raise HeaderError(f"{self._arch}.block_count is 0; a model has at least one layer")
        return n

    def required(self, key: str) -> int:
        field = self.field(key)
        value = 0 if field is None else _int_value(f"{self._arch}.{key}", field, U32_MAX, "")
        if value == 0:
            raise HeaderError(f"{self._arch}.{key} is missing or 0")
        return value

    def check_floats(self) -> None:
        """The float hparams llama.cpp reads are finite numbers in range."""
        for key, lowest, inclusive in _FLOAT_KEYS:
            field = self.field(key)
            if field is None:
                continue
            full = f"{self._arch}.{key}"
            if field.type != FLOAT32:  # get_key<float>: FLOAT32 only
                raise HeaderError(f"{full} is {field.type_name}; llama.cpp needs FLOAT32")
            value = float(field.value)  # type: ignore[arg-type]
            if not math.isfinite(value):
                raise HeaderError(f"{full} is {value}, not a finite number")
            if value < lowest or (value == lowest and not inclusive):
                relation = "at least" if inclusive else "above"
                raise HeaderError(f"{full} is {value}; it must be {relation} {lowest:g}")


def _window(keys: _Keys, arch: str, n_layer: int) -> int:
    """The sliding window llama.cpp's loader ends up with (0: none). Most read the file's;
    a few fix their own: Llama 4's chunked attention is 8192 tokens unless the file sets a
    window of 0, SmallThinker's 4096 whenever the file sets one, EXAONE 4's 4096 for its
    64-layer model only, Gemma 2's 4096 unless the file says otherwise."""
    window = keys.get_int("attention.sliding_window")
    has_key = keys.has("attention.sliding_window")
    if arch == "llama4":
        return 0 if has_key and window == 0 else 8192
    if arch == "smallthinker":
        return 4096 if window > 0 else 0
    if arch == "exaone4":
        return (window if has_key else 4096) if n_layer == 64 else 0
    if arch == "gemma2":
        return window if has_key else 4096
    return window


def _swa_layers(
    keys: _Keys, arch: str, n_layer: int, window: int, n_head_kv: list[int], n_trunk: int
) -> list[bool]:
    if window <= 0:
        return []
    if arch == _DSV4:
        return [True] * n_layer
    if arch in _SWA_ATTENTION_LAYERS:
        return [kv > 0 for kv in n_head_kv]
    if arch not in _SWA_PERIOD and arch not in _SWA_ARRAY_ONLY:
        return []
    field = keys.field("attention.sliding_window_pattern")
    if field is not None and field.type == ARRAY:
        if field.item_type not in _LAYER_ARRAY_ITEMS:
            raise HeaderError(f"{arch}.attention.sliding_window_pattern is {field.type_name}")
        if field.count != n_layer or field.items is None:
            raise HeaderError(
                f"{arch}.attention.sliding_window_pattern has {field.count} entries, "
                f"not one per layer ({n_layer})"
            )
        return [bool(v) for v in field.items]
    if arch in _SWA_ARRAY_ONLY:
        raise HeaderError(
            f"{arch}.attention.sliding_window_pattern is missing; llama.cpp needs one per layer"
        )
    period, dense_first = _SWA_PERIOD[arch]
    if field is not None:
        period = keys.get_int("attention.sliding_window_pattern")
    # the pattern marks the trunk's layers (n_layer()); appended MTP blocks never slide
    if dense_first:
        slides = [period == 0 or il % period != 0 for il in range(n_trunk)]
    else:
        slides = [period == 0 or il % period < period - 1 for il in range(n_trunk)]
    return slides + [False] * (n_layer - n_trunk)


# Recurrent layers, as the pinned llama.cpp's loaders mark them (is_recr_impl):
# - wholly recurrent architectures (llm_arch_is_recurrent): every layer, and no KV cache at all;
_RECURRENT_ONLY = frozenset({"mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7"})
# - hybrids that list them (attention.recurrent_layers) or else keep every Nth layer for full
#   attention (full_attention_interval, this default): the others recurrent, without KV;
_RECURRENT_BY_INTERVAL = {"qwen3next": 4, "qwen35": 4, "qwen35moe": 4, "qwen4exp": 4,
                          "minimax-01": 8}  # fmt: skip
# - Nemotron-H: a layer with neither KV heads nor a feed-forward (the others are attention or
#   MLP-only layers); Falcon-H1: every layer runs attention and an SSM side by side;
# - every other hybrid (Jamba, PLaMo 2, Granite hybrid, LFM2, Kimi Linear/K3, GLM-5-Next,
#   Bailing MoE 3, ...): the layers with 0 KV heads.
_RECURRENT_NO_FF = frozenset({"nemotron_h", "nemotron_h_moe"})
_RECURRENT_EVERY_LAYER = frozenset({"falcon-h1"})


def _is_recurrent_arch(keys: _Keys, arch: str) -> bool:
    """Whether the model keeps a recurrent state (an SSM, RWKV, short convolution, delta net)."""
    return (
        arch in _RECURRENT_ONLY
        or arch in _RECURRENT_BY_INTERVAL
        or any(keys.has(k) for k in ("ssm.conv_kernel", "wkv.head_size", "shortconv.l_cache"))
    )


def _recurrent_layers(keys: _Keys, arch: str, n_layer: int, n_head_kv: list[int]) -> list[bool]:
    if arch in _RECURRENT_ONLY or arch in _RECURRENT_EVERY_LAYER:
        return [True] * n_layer
    if arch in _RECURRENT_BY_INTERVAL:
        field = keys.field("attention.recurrent_layers")
        if field is not None and field.type != ARRAY:  # get_key_or_arr: one value, every layer
            return [bool(keys.get_int("attention.recurrent_layers"))] * n_layer
        if field is not None and field.type == ARRAY:
            if field.item_type not in _LAYER_ARRAY_ITEMS or field.items is None:
                raise HeaderError(f"{arch}.attention.recurrent_layers is {field.type_name}")
            if field.count != n_layer:
                raise HeaderError(
                    f"{arch}.attention.recurrent_layers has {field.count} entries, "
                    f"not one per layer ({n_layer})"
                )
            return [bool(v) for v in field.items]
        every = keys.get_int("full_attention_interval", _RECURRENT_BY_INTERVAL[arch])
        if every == 0:
            raise HeaderError(f"{arch}.full_attention_interval is 0")
        return [(il + 1) % every != 0 for il in range(n_layer)]
    if arch in _RECURRENT_NO_FF:
        ff = keys.per_layer("feed_forward_length", n_layer, 0)
        return [kv == 0 and f == 0 for kv, f in zip(n_head_kv, ff, strict=True)]
    marked = [kv == 0 for kv in n_head_kv]
    return marked if any(marked) else [True] * n_layer


def _recurrent_state_bytes(keys: _Keys, arch: str, n_embd: int, n_head0: int, layers: int) -> int:
    """f32 state one sequence keeps over `layers` recurrent layers: llama.cpp's r (convolution
    or token shift) and s (SSM, WKV or delta-net state) rows (llama_hparams::n_embd_r/_s)."""
    d_conv = keys.get_int("ssm.conv_kernel")
    d_inner = keys.get_int("ssm.inner_size")
    d_state = keys.get_int("ssm.state_size")
    n_group = keys.get_int("ssm.group_count")
    wkv = keys.get_int("wkv.head_size")
    shortconv = keys.get_int("shortconv.l_cache")
    kda = keys.get_int("kda.head_dim")
    if wkv:  # RWKV: token-shift rows, then a head_size-wide state per channel
        r = keys.get_int("token_shift_count", 2) * n_embd
        s = n_embd * wkv
    elif shortconv:  # LFM2's short convolution
        r = n_embd * (shortconv - 1)
        s = d_state * d_inner
    elif kda:  # Kimi delta attention: Q, K and V convolutions, a head_dim^2 state per head
        r = 3 * (d_conv - 1 if d_conv > 0 else 3) * n_head0 * kda
        s = kda * kda * n_head0
    else:  # Mamba, Mamba 2 and the gated delta nets (Qwen3-Next, Qwen3.5)
        r = max(d_conv - 1, 0) * (d_inner + 2 * n_group * d_state)
        s = d_state * d_inner
        if arch == "minimax-01":  # lightning attention: a key_length^2 state per head
            head = keys.get_int("attention.key_length", n_embd // max(n_head0, 1))
            s = head * head * n_head0
    return 4 * (r + s) * layers


# MLA: the loaders that read key_length_mla/value_length_mla (src/models/<arch>.cpp). Where a
# file states both, llama.cpp caches the compressed latent as K alone (is_mla); a file without
# them (DeepSeek 2/3 files converted before the MLA cache) gets ordinary per-head K and V.
_MLA_ARCHS = frozenset(
    {"deepseek2", "deepseek32", "dots3note", "glm-dsa", "glm5-next", "hy_v4", "bailingmoe3",
     "kimi-linear", "kimi-k3", "mistral4"}
)  # fmt: skip

# Sparse attention's indexer caches, as llama_model::create_memory builds them: one key head
# of attention.indexer.key_length per cell over the whole context, on these layers:
# - deepseek32: every trunk layer (not the nextn ones);
# - glm-dsa: the trunk layers attention.indexer.types marks (default: all of them, or, from a
#   1M-token context on, GLM 5.2's two then every fourth);
# - hy_v4 with indexer.top_k > 0: the layers indexer.types marks (default none);
# - dots3note: the layers its required indexer.types array marks;
# - minimax-m3: every layer past the leading dense ones, and V too (not an MLA cache);
# - glm5-next: the trunk attention layers indexer.types marks (default all), each cell a key, a
#   gate and a pooled key (indexer_kpool_row 3);
# - qwen4exp: the trunk attention layers, a key and a pooled key when its compress ratios pool.
_INDEXER_ARCHS = frozenset(
    {"deepseek32", "glm-dsa", "hy_v4", "dots3note", "minimax-m3", "glm5-next", "qwen4exp"}
)
_GLM52_CTX = 1048576
_GLM52_LAYERS = 78


def _required_array(keys: _Keys, arch: str, key: str) -> tuple[int, list[int]]:
    """A per-layer array the loader requires (ml.get_arr, no default): (its length, its items);
    one line naming it when it is missing or its items are not integers."""
    field = keys.field(key)
    if field is None or field.type != ARRAY:
        raise HeaderError(f"{arch}.{key} is missing; llama.cpp needs an array")
    if field.item_type not in _LAYER_ARRAY_ITEMS or field.items is None:
        raise HeaderError(f"{arch}.{key} is {field.type_name}")
    return field.count, [int(v) for v in field.items]


def _compress_ratios(keys: _Keys, arch: str, n_layer: int) -> list[int]:
    """DeepSeek 4's attention.compress_ratios: one per layer or more (the rest ignored), each
    0, 4 or 128, as its loader requires."""
    if arch != _DSV4:
        return []
    if keys.get_int("attention.sliding_window") == 0:
        raise HeaderError(f"{arch}.attention.sliding_window is missing or 0")
    count, items = _required_array(keys, arch, "attention.compress_ratios")
    if not n_layer <= count <= LLAMA_MAX_LAYERS:
        raise HeaderError(
            f"{arch}.attention.compress_ratios has {count} entries; block_count is {n_layer}"
        )
    ratios = items[:n_layer]
    if bad := sorted(set(ratios) - _DSV4_RATIOS):
        raise HeaderError(
            f"{arch}.attention.compress_ratios has {bad[0]}; llama.cpp takes 0, 4, 128"
        )
    return ratios


def _indexer_types(keys: _Keys, arch: str, trunk: int, n_layer: int, default: int) -> list[bool]:
    """attention.indexer.types over the trunk layers (one number, or one per trunk layer;
    dots3note's loader takes an array of any length up to the layers, the rest 0)."""
    if arch == "dots3note":
        count, items = _required_array(keys, arch, "attention.indexer.types")
        if count > LLAMA_MAX_LAYERS:  # get_arr: up to LLAMA_MAX_LAYERS, the rest 0
            raise HeaderError(
                f"{arch}.attention.indexer.types has {count} entries, more than "
                f"LLAMA_MAX_LAYERS ({LLAMA_MAX_LAYERS})"
            )
        return [il < trunk and il < len(items) and bool(items[il]) for il in range(n_layer)]
    if not keys.has("attention.indexer.types"):
        if arch == "glm-dsa" and default < 0:  # GLM 5.2's table: 78 layers, the rest 0
            marked = [il < _GLM52_LAYERS and (il < 2 or (il - 2) % 4 == 0) for il in range(trunk)]
        else:
            marked = [bool(default)] * trunk
    else:
        marked = [bool(v) for v in keys.per_layer("attention.indexer.types", trunk, 0)]
    return marked + [False] * (n_layer - trunk)


def _indexer(
    keys: _Keys,
    arch: str,
    blocks: tuple[int, int],
    recurrent: list[bool],
    mla: bool,
    head_v: int,
) -> tuple[int, int, list[bool]]:
    """(K elements, V elements, layers) of the indexer cache; `blocks` is (block_count, the
    trunk: the blocks before the MTP ones); (0, 0, []) for none."""
    if arch not in _INDEXER_ARCHS:
        return 0, 0, []
    n_layer, trunk = blocks
    head = keys.get_int("attention.indexer.key_length")
    attn = [not r for r in recurrent] if recurrent else [True] * n_layer
    row = 1
    if arch == "deepseek32":
        layers = [il < trunk for il in range(n_layer)]
    elif arch == "glm-dsa":
        default = 1 if keys.get_int("context_length") < _GLM52_CTX else -1
        layers = _indexer_types(keys, arch, trunk, n_layer, default)
        if trunk and not layers[0]:
            # a shared layer reuses the last full layer's selection (glm-dsa.cpp asserts one)
            raise HeaderError(
                f"{arch}.attention.indexer.types marks layer 0 shared; llama.cpp needs a full "
                "indexer layer first"
            )
    elif arch == "hy_v4":
        if not keys.get_int("attention.indexer.top_k"):
            return 0, 0, []
        layers = _indexer_types(keys, arch, trunk, n_layer, 0)
    elif arch == "dots3note":
        layers = _indexer_types(keys, arch, trunk, n_layer, 0)
    elif arch == "minimax-m3":
        lead = keys.get_int("leading_dense_block_count")
        layers = [il >= lead for il in range(n_layer)]

    elif arch == "glm5-next":
        types = _indexer_types(keys, arch, trunk, n_layer, 1)
        layers = [t and a for t, a in zip(types, attn, strict=True)]
        row = 3  # key | gate | pooled key (the loader asserts a k-pool)
    else:  # qwen4exp
        layers = [il < trunk and a for il, a in enumerate(attn)]
        ratios = keys.per_layer("attention.compress_ratios", n_layer, 0)
        row = 2 if any(ratios) else 1  # key | pooled key
    if not head or not any(layers):
        return 0, 0, []
    # the hybrid-idx indexers (glm5-next, qwen4exp) are made MLA caches whatever the model is
    k_only = mla or arch in ("glm5-next", "qwen4exp")
    return head * row, 0 if k_only else head_v, layers


# MTP (nextn) blocks, the last nextn_predict_layers of block_count. These loaders skip every
# tensor of them unless MTP drafting is asked for (TENSOR_SKIP; deployer never asks), so they
# hold no weights, but for the few tensors some create without the skip flag (kept, below).
# HY-V3's and Step 3.5's skip only the block's attention and its nextn projection and norms
# (the tensors created with mtp_flags), and load the rest: its feed-forward and experts, its
# embedding and head copies.
_NEXTN_SKIPS_WEIGHTS = frozenset(
    {"bailingmoe2", "bailingmoe3", "cohere2moe", "deepseek2", "deepseek32", "deepseek4",
     "dots3note", "exaone-moe", "exaone4", "glm4", "glm4moe", "glm-dsa", "glm5-next", "mimo2",
     "mistral4", "nemotron_h", "nemotron_h_moe", "qwen35", "qwen35moe", "qwen3next", "qwen4exp"}
)  # fmt: skip
# DeepSeek 3.2 and GLM-5 create the block's expert-bias vector without the skip flag
# (TENSOR_NOT_REQUIRED alone): loaded, a few bytes; Cohere 2 MoE its embedding and head copies
# and head norm. The other loaders skip them with the block.
_NEXTN_LOADED_ANYWAY = {
    "deepseek32": ("exp_probs_b.bias",),
    "glm-dsa": ("exp_probs_b.bias",),
    "cohere2moe": (
        "nextn.embed_tokens.weight", "nextn.shared_head_head.weight",
        "nextn.shared_head_norm.weight",
    ),
}  # fmt: skip
_MTP_ATTENTION = (
    "attn_norm.weight", "attn_qkv.weight", "attn_qkv.bias", "attn_q.weight", "attn_k.weight",
    "attn_v.weight", "attn_q.bias", "attn_k.bias", "attn_v.bias", "attn_output.weight",
    "ffn_norm.weight", "nextn.eh_proj.weight", "nextn.enorm.weight", "nextn.hnorm.weight",
)  # fmt: skip
_NEXTN_SKIPS_ONLY = {
    "step35": _MTP_ATTENTION,
    "hy_v3": (*_MTP_ATTENTION, "attn_q_norm.weight", "attn_k_norm.weight"),
}
# Their KV: the main context's cache filters them out (il < n_layer()) on the default path and
# the sparse-attention and Qwen hybrids' paths; these build it without that filter: DeepSeek 4's
# raw and compressed caches, MiniMax-M3's, HY-V4's, DFlash's, and the hybrids whose attention
# filters have no such bound. (A recurrent state never covers them: llama_memory_recurrent
# walks n_layer(); the plan keeps it on these hybrids' MTP blocks, over by one layer's state.)
_NEXTN_KEEPS_CACHE = frozenset(
    {"deepseek4", "minimax-m3", "hy_v4", "dflash", "jamba", "falcon-h1", "plamo2",
     "granitehybrid", "lfm2", "lfm2moe", "nemotron_h", "nemotron_h_moe", "kimi-linear",
     "bailingmoe3", "kimi-k3"}
)  # fmt: skip
# Granite Switch reuses the count for a router layer it appends (index block_count - nextn):
# one KV head over the whole context, which the trunk attends.
_NEXTN_ROUTER = "graniteswitch"


def _architecture(header: GGUFHeader) -> str:
    field = header.kv.get("general.architecture")
    if field is None:
        raise HeaderError("general.architecture is missing")
    if field.type != STRING or not isinstance(field.value, str):
        raise HeaderError(f"general.architecture is {field.type_name}, not a short string")
    if not _ARCH_RE.fullmatch(field.value):
        raise HeaderError(
            "general.architecture is not an architecture name (lowercase letters, digits, -_.)"
        )
    return field.value


def _string_array_len(header: GGUFHeader, key: str) -> int | None:
    """How many strings the array `key` holds (never decoded); None when absent."""
    field = header.kv.get(key)
    if field is None:
        return None
    if field.type != ARRAY or field.item_type != STRING:
        raise HeaderError(f"{key} is {field.type_name}, not ARRAY[STRING]")
    return field.count


def _n_vocab(header: GGUFHeader, keys: _Keys, tensors: dict[str, TensorInfo]) -> int:
    tokens = _string_array_len(header, "tokenizer.ggml.tokens")
    if tokens is not None:
        return tokens
    n_vocab = keys.get_int("vocab_size")
    embd = tensors.get("token_embd.weight")
    if not n_vocab and embd is not None and len(embd.shape) >= 2:
        n_vocab = embd.shape[-1]
    return n_vocab


# Tokenizer kinds whose merge rules llama.cpp reads (src/llama-vocab.cpp, load): any other kind
# (llama/SentencePiece, bert, t5, rwkv, ...) never looks at tokenizer.ggml.merges.
BPE_TOKENIZERS = frozenset({"gpt2", "hybriddna", "whitespace", "gemma4"})


def _n_merges(header: GGUFHeader) -> int:
    """BPE merges: llama.cpp keeps each as a pair of strings in a hash table (its host memory)."""
    kind = header.kv.get("tokenizer.ggml.model")
    if kind is None or kind.value not in BPE_TOKENIZERS:
        return 0
    return _string_array_len(header, "tokenizer.ggml.merges") or 0


def _experts(keys: _Keys, arch: str) -> tuple[int, int]:
    n_expert = keys.get_int("expert_count", hi=LLAMA_MAX_EXPERTS, limit=" (LLAMA_MAX_EXPERTS)")
    used = keys.get_int("expert_used_count")
    if used > n_expert:
        raise HeaderError(f"{arch}.expert_used_count {used} exceeds expert_count {n_expert}")
    if n_expert and not used:
        raise HeaderError(f"{arch}.expert_used_count is missing or 0 with {n_expert} experts")
    return n_expert, used


def _arch_from_header(header: GGUFHeader, tensors: dict[str, TensorInfo]) -> ModelArch:
    arch = _architecture(header)
    keys = _Keys(header, arch)
    n_layer = keys.n_layer()
    n_embd = keys.required("embedding_length")
    ctx_train = keys.required("context_length")
    keys.check_floats()
    recurrent = _is_recurrent_arch(keys, arch)
    if not recurrent and not keys.has("attention.head_count"):
        raise HeaderError(f"{arch}.attention.head_count is missing")
    heads = keys.per_layer("attention.head_count", n_layer, 0)
    n_head, n_head0 = max(heads), heads[0]
    if keys.has("attention.head_count_kv"):
        n_head_kv = keys.per_layer("attention.head_count_kv", n_layer, 0)
    else:  # llama.cpp: as many KV heads as query heads, layer by layer (none for a pure SSM)
        n_head_kv = heads if recurrent else [n_head] * n_layer
    recurrent_layers = _recurrent_layers(keys, arch, n_layer, n_head_kv) if recurrent else []
    if arch in _RECURRENT_ONLY or arch in _RECURRENT_BY_INTERVAL:
        # llama.cpp builds no KV cells for these layers (a recurrent-only memory, or a hybrid's
        # attention filter), whatever head_count_kv says
        n_head_kv = [0 if r else kv for kv, r in zip(n_head_kv, recurrent_layers, strict=True)]
    if arch in _RECURRENT_NO_FF:
        # Nemotron-H's attention filter takes the layers without a feed-forward: a layer with
        # both (an MTP block) gets no KV cells, whatever its heads
        ff = keys.per_layer("feed_forward_length", n_layer, 0)
        n_head_kv = [0 if f else kv for kv, f in zip(n_head_kv, ff, strict=True)]
    nextn = keys.get_int("nextn_predict_layers")
    if nextn >= n_layer:
        raise HeaderError(f"{arch}.nextn_predict_layers is {nextn}; block_count is {n_layer}")
    if arch == _NEXTN_ROUTER:
        n_real = n_layer - nextn
        if n_real >= LLAMA_MAX_LAYERS:
            raise HeaderError(f"{arch}: {n_real} blocks and a router layer exceed LLAMA_MAX_LAYERS")
        n_head_kv = [*n_head_kv[:n_real], 1]  # the appended router layer: one KV head
        nextn = 0
    if nextn and arch not in _NEXTN_KEEPS_CACHE:
        n_head_kv = n_head_kv[: n_layer - nextn] + [0] * nextn
        if recurrent_layers:
            recurrent_layers = recurrent_layers[: n_layer - nextn] + [False] * nextn
    if not recurrent and n_head == 0:
        raise HeaderError(f"{arch}.attention.head_count is 0")
    n_head = max(n_head, 1)  # pure SSMs have no attention heads
    head_dim_k = keys.get_int("attention.key_length", n_embd // n_head)
    head_dim_v = keys.get_int("attention.value_length", n_embd // n_head)
    if not head_dim_k or not head_dim_v:
        raise HeaderError(
            f"{arch}: key/value length is 0 (embedding_length {n_embd}, head_count {n_head})"
        )
    # a sliding-window layer's head sizes, when they differ (llama_model::load_hparams reads
    # them for every architecture, defaulting to the full layers')
    head_dim_k_swa = keys.get_int("attention.key_length_swa", head_dim_k)
    head_dim_v_swa = keys.get_int("attention.value_length_swa", head_dim_v)
    if not head_dim_k_swa or not head_dim_v_swa:
        raise HeaderError(f"{arch}: a sliding-window key/value length is 0")
    kv_layers = _kv_layers(keys, arch, n_layer)
    n_ff = keys.get_int("expert_feed_forward_length") or keys.get_int("feed_forward_length")
    keys.per_layer("feed_forward_length", n_layer, 0)  # an array must have one per layer
    n_vocab = _n_vocab(header, keys, tensors)
    if not n_vocab:
        raise HeaderError("no vocabulary: tokenizer.ggml.tokens, vocab_size and token_embd absent")
    n_expert, n_expert_used = _experts(keys, arch)
    window = _window(keys, arch, n_layer)
    swa = _swa_layers(keys, arch, n_layer, window, n_head_kv, n_layer - nextn)
    kv_lora_rank = keys.get_int("attention.kv_lora_rank")
    mla = (
        arch in _MLA_ARCHS
        and keys.get_int("attention.key_length_mla") > 0
        and keys.get_int("attention.value_length_mla") > 0
    )
    indexer_k, indexer_v, indexer_layers = _indexer(
        keys, arch, (n_layer, n_layer - nextn), recurrent_layers, mla, head_dim_v
    )
    if arch == "minimax-m3" and indexer_layers:
        # its sparse attention asserts one indexer head per KV head group (minimax-m3.cpp)
        idx_heads = keys.get_int("attention.indexer.head_count")
        kv = {n_head_kv[il] for il, on in enumerate(indexer_layers) if on and n_head_kv[il]}
        if kv - {idx_heads}:
            raise HeaderError(
                f"{arch}.attention.indexer.head_count is {idx_heads}; llama.cpp needs one per KV "
                f"head group ({', '.join(str(k) for k in sorted(kv))})"
            )
    compress_ratios = _compress_ratios(keys, arch, n_layer)
    if compress_ratios:  # DeepSeek 4's indexer keys live in its compressed cache
        indexer_k = keys.get_int("attention.indexer.key_length")
    indexer_q = (
        keys.get_int("attention.indexer.head_count") * keys.get_int("attention.indexer.key_length")
        if indexer_layers
        else 0
    )
    loops = keys.get_int("num_loops", 1) if arch in _LOOPED_ARCHS else 1
    if loops < 1:
        raise HeaderError(f"{arch}.num_loops is 0; llama.cpp needs at least 1")
    if loops > 1:
        # Nanbeige's loader runs the blocks num_loops times: block_count x num_loops logical
        # layers share the blocks' weights, each with its own KV cells
        # (src/models/nanbeige.cpp, load_arch_hparams; llama.cpp asserts the product's bound)
        if n_layer * loops > LLAMA_MAX_LAYERS:
            raise HeaderError(f"{arch}: {n_layer} blocks x {loops} loops exceed LLAMA_MAX_LAYERS")
        beyond = sorted(n for n in tensors if _block_index(n) >= n_layer)
        if beyond:  # the loops reuse the file's blocks; llama.cpp loads no others
            raise HeaderError(
                f"tensor {shown(beyond[0])} is beyond block_count {n_layer} (num_loops "
                "repeats the blocks, it adds none)"
            )
        n_layer, n_head_kv, swa = n_layer * loops, n_head_kv * loops, swa * loops
        recurrent_layers = recurrent_layers * loops
    return ModelArch(
        architecture=arch,
        n_layer=len(n_head_kv),  # Granite Switch's router layer included
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=head_dim_k,
        head_dim_v=head_dim_v,
        n_ff=n_ff,
        n_vocab=n_vocab,
        n_merges=_n_merges(header),
        ctx_train=ctx_train,
        sliding_window=window if any(swa) else 0,
        swa_layers=swa if any(swa) else [],
        n_expert=n_expert,
        n_expert_used=n_expert_used,
        tied_embeddings="output.weight" not in tensors,
        kv_lora_rank=kv_lora_rank,
        n_rot=keys.get_int("rope.dimension_count") if kv_lora_rank else 0,
        recurrent_state_bytes_per_seq=_recurrent_state_bytes(
            keys, arch, n_embd, n_head0, sum(recurrent_layers)
        ),
        recurrent_layers=recurrent_layers if any(recurrent_layers) else [],
        head_dim_k_swa=head_dim_k_swa if head_dim_k_swa != head_dim_k else 0,
        head_dim_v_swa=head_dim_v_swa if head_dim_v_swa != head_dim_v else 0,
        kv_layers=kv_layers,
        mla=mla,
        indexer_k=indexer_k,
        indexer_v=indexer_v,
        indexer_layers=indexer_layers,
        indexer_q=min(indexer_q, U32_MAX),
        # DeepSeek 4's indexer lives in its compressed cache: its top-k masks those rows
        indexer_top_k=(
            keys.get_int("attention.indexer.top_k") if indexer_layers or compress_ratios else 0
        ),
        compress_ratios=compress_ratios,
        hyper_connections=keys.get_int("hyper_connection.count"),
        residual_checkpoints=_residual_checkpoints(keys, arch, n_layer - nextn),
        nextn_layers=nextn,
        n_embd_input_extra=sum(
            tensors[n].shape[0] for n in _INPUT_TABLES if n in tensors and tensors[n].shape
        ),
        n_ff_dense=_widest_rows(tensors, "ffn_up.weight") if n_expert else 0,
        n_ff_shared=_widest_rows(tensors, "ffn_up_shexp.weight") if n_expert else 0,
        n_deepstack=_n_deepstack(keys, arch),
        no_memory=arch in _NO_MEMORY_ARCHS,
        mixer_floats=_mixer_floats(keys, arch, n_embd) if recurrent else 0,
    )


def _residual_checkpoints(keys: _Keys, arch: str, n_trunk: int) -> int:
    """Kimi-K3's cross-layer residual attention banks the input of every attn_res.block_size-th
    layer (src/models/kimi-k3.cpp, res_push at il % block_size == 0): ceil(layers / size)."""
    size = keys.get_int("attn_res.block_size") if arch == "kimi-k3" else 0
    return -(-n_trunk // size) if size else 0


# The recurrent mixers whose live tensors outgrow a feed-forward's (read off small files
# against llama-server's log: never under, 0.01-2.5 MiB over at ubatch 512):
# - Mamba and Mamba 2 layers (src/models/mamba-base.cpp; Jamba, PLaMo 2, Falcon-H1,
#   Nemotron-H, Granite 4 hybrids): the in-projection (2 d_inner + 2 groups x d_state + heads),
#   the convolution's input and output, the scan's output and the gate, beside the residual
#   rows; Falcon-H1's attention output rides alongside;
# - RWKV's time mix: the fused lerp and the r, w, k, v, a, g rows with their LoRA
#   intermediates (20.1 n_embd-wide rows for RWKV 7, 15.1-15.8 for RWKV 6).
_MAMBA_ARCHS = frozenset(
    {"mamba", "mamba2", "jamba", "plamo2", "falcon-h1", "nemotron_h", "nemotron_h_moe",
     "granitehybrid"}
)  # fmt: skip
_RWKV_MIXER_ROWS = {"rwkv7": 21, "arwkv7": 21, "rwkv6": 16, "rwkv6qwen2": 16}


def _mixer_floats(keys: _Keys, arch: str, n_embd: int) -> int:
    if arch in _RWKV_MIXER_ROWS:
        return min(_RWKV_MIXER_ROWS[arch] * n_embd, U32_MAX)
    if arch not in _MAMBA_ARCHS:
        return 0
    d_inner = keys.get_int("ssm.inner_size")
    groups = max(keys.get_int("ssm.group_count"), 1)
    rows = -(-(9 * n_embd + 11 * d_inner) // 2)  # 4.5 n_embd + 5.5 d_inner, rounded up
    rows += 6 * groups * keys.get_int("ssm.state_size") + 2 * keys.get_int("ssm.time_step_rank")
    return min(rows + (n_embd if arch == "falcon-h1" else 0), U32_MAX)


def _widest_rows(tensors: dict[str, TensorInfo], suffix: str) -> int:
    """The most output rows of any block's 2-D `suffix` tensor (a feed-forward's width)."""
    return max(
        (
            t.shape[1]
            for name, t in tensors.items()
            if len(t.shape) == 2 and name.endswith("." + suffix) and _BLOCK_RE.match(name)
        ),
        default=0,
    )


# Qwen3-VL states its deepstack inputs; Granite Vision maps layers to them (its distinct
# non-negative indices, llama_model_granite::load_arch_hparams).
_DEEPSTACK_COUNT_ARCHS = frozenset({"qwen3vl", "qwen3vlmoe"})
_DEEPSTACK_MAPPING_ARCHS = frozenset({"granite", "granite_swa"})


def _n_deepstack(keys: _Keys, arch: str) -> int:
    """Deepstack inputs: the input row is n_embd x (1 + this) wide (llama_hparams::n_embd_inp)."""
    if arch in _DEEPSTACK_COUNT_ARCHS:
        return keys.get_int("n_deepstack_layers", hi=LLAMA_MAX_LAYERS)
    field = keys.field("deepstack_mapping")
    if arch not in _DEEPSTACK_MAPPING_ARCHS or field is None or field.type != ARRAY:
        return 0  # get_arr of a missing or non-array key: no mapping
    key = f"{arch}.deepstack_mapping"
    # llama_model_loader::get_arr into an int32 array of LLAMA_MAX_LAYERS: BOOL, UINT32 or
    # INT32 items (UINT32 read as int32), at most that many; an index is an input when >= 0,
    # and none may exceed the count of distinct inputs (llama_model_granite::load_arch_hparams)
    if field.item_type not in _LAYER_ARRAY_ITEMS or field.items is None:
        raise HeaderError(f"{key} is {field.type_name}; llama.cpp needs UINT32 or INT32 items")
    if field.count > LLAMA_MAX_LAYERS:
        raise HeaderError(f"{key} has {field.count} entries; llama.cpp takes {LLAMA_MAX_LAYERS}")
    values = [int(v) - (1 << 32) if int(v) >= 1 << 31 else int(v) for v in field.items]
    distinct = {v for v in values if v >= 0}
    if any(v > len(distinct) for v in distinct):
        raise HeaderError(f"{key} maps to input {max(distinct)} of {len(distinct)}")
    return len(distinct)


# llama_model::create_memory gives these no memory at all: embedding models (BERT and its kin,
# EmbeddingGemma), diffusion LMs (Dream, LLaDA, RND1), WavTokenizer's decoder.
_NO_MEMORY_ARCHS = frozenset(
    {"bert", "modern-bert", "nomic-bert", "nomic-bert-moe", "neo-bert", "jina-bert-v2",
     "jina-bert-v3", "eurobert", "clef", "gemma-embedding", "wavtokenizer-dec", "dream",
     "llada", "llada-moe", "rnd1"}
)  # fmt: skip


def _kv_layers(keys: _Keys, arch: str, n_layer: int) -> int:
    """Layers that own a KV cache, for the architectures whose later layers reuse an earlier
    one's (0: every layer owns one)."""
    if arch in _KV_LAYERS_FIXED:
        own = _KV_LAYERS_FIXED[arch]
    elif arch in _KV_SHARED_KEY_ARCHS and keys.has("attention.shared_kv_layers"):
        shared = keys.get_int("attention.shared_kv_layers")
        if shared >= n_layer:
            raise HeaderError(
                f"{arch}.attention.shared_kv_layers is {shared}; block_count is {n_layer}"
            )
        own = n_layer - shared
    else:
        return 0
    if own >= n_layer:
        return 0
    if own < 2:  # llama.cpp asserts it: a reusing layer needs an earlier one of each kind
        raise HeaderError(f"{arch}: {own} layers with their own KV cache; llama.cpp needs 2")
    return own


def _tensors(header: GGUFHeader) -> list[TensorInfo]:
    return [TensorInfo(t.name, t.ggml_type, t.shape, t.n_bytes) for t in header.tensors]


def _routed(t: TensorInfo) -> bool:
    """A routed experts' tensor (ffn_{gate,up,down,gate_up}_exps and their biases): a token
    reads the rows of the n_expert_used experts it is routed to. Grove MoE's chunk experts
    (_chexps) are left out, counted as read whole: their routing is by group, not top-k."""
    return "_exps." in t.name


def _repacked(t: TensorInfo) -> bool:
    # ggml-cpu's repack buffer takes a 2-D weight of a MUL_MAT, or a 3-D one of a MUL_MAT_ID
    # (stacked experts); a 3-D weight of a plain MUL_MAT (MLA's attn_k_b/attn_v_b) stays put.
    experts = _routed(t) or "_chexps." in t.name
    return (
        t.ggml_type in CPU_REPACK_TYPES
        and t.name.endswith(".weight")
        and (len(t.shape) == 2 or (len(t.shape) == 3 and experts))
        and t.shape[1] % _REPACK_ROW_MULTIPLE == 0
    )


# Input-layer tables other than token_embd (llama-arch.cpp: LLM_TENSOR_LAYER_INPUT, read by
# GET_ROWS): llama.cpp keeps them on the CPU whatever -ngl says, and reads a row a token.
_INPUT_TABLES = frozenset(
    {"per_layer_token_embd.weight", "position_embd.weight", "token_types.weight"}
)


# Gemma 3n/4's projection into the per-layer inputs: created with block 0 (a repeating-layer
# tensor), so it sits on block 0's device, not the output layer's.
_LAYER0_TABLES = frozenset({"per_layer_model_proj.weight", "per_layer_proj_norm.weight"})


def _skipped(
    t: TensorInfo, trunk: int, kept: tuple[str, ...] = (), only: tuple[str, ...] = ()
) -> bool:
    """A tensor of an MTP (nextn) block that llama.cpp does not create unless MTP is loaded
    (TENSOR_SKIP): it takes no memory and is never read. `kept`: name endings the loader
    creates all the same; `only`, where given: the only ones it skips."""
    match = _BLOCK_RE.match(t.name)
    if match is None or int(match.group(1)) < trunk:
        return False
    rest = t.name[match.end() :]
    return rest in only if only else not t.name.endswith(kept)


def layout_from_tensors(
    tensors: list[TensorInfo],
    n_layer: int,
    file_bytes: int,
    nextn_layers: int = 0,
    nextn_kept: tuple[str, ...] = (),
    nextn_only: tuple[str, ...] = (),
) -> WeightLayout:
    """Exact WeightLayout from a tensor table (all parts of a split set together). The last
    `nextn_layers` blocks (MTP heads, which llama-server loads only for MTP drafting) hold
    nothing but the tensors whose names end in `nextn_kept`."""
    blocks, repack, routed = [0] * n_layer, [0] * n_layer, [0] * n_layer
    trunk = n_layer - nextn_layers
    token_embd = output = other = inputs = 0
    for t in tensors:
        match = _BLOCK_RE.match(t.name)
        if match:
            il = int(match.group(1))
            if il >= n_layer:
                raise HeaderError(f"tensor {shown(t.name)} is beyond block_count {n_layer}")
            if _skipped(t, trunk, nextn_kept, nextn_only):
                continue
            blocks[il] += t.n_bytes
            repack[il] += t.n_bytes if _repacked(t) else 0
            routed[il] += t.n_bytes if _routed(t) else 0
        elif t.name == "token_embd.weight":
            token_embd = t.n_bytes
        elif t.name in _INPUT_TABLES:
            inputs += t.n_bytes
        elif t.name in _LAYER0_TABLES and n_layer:
            blocks[0] += t.n_bytes
            repack[0] += t.n_bytes if _repacked(t) else 0
        elif t.name == "output.weight":
            output = t.n_bytes
        else:
            other += t.n_bytes  # output_norm, rope factors...: placed with the output layer
    tied = not any(t.name == "output.weight" for t in tensors)
    # The output layer's matrix (output.weight, or token_embd duplicated as it when tied) is a
    # MUL_MAT weight like any other: a repacked type gets a CPU_REPACK copy.
    out_name = "token_embd.weight" if tied else "output.weight"
    output_repack = sum(t.n_bytes for t in tensors if t.name == out_name and _repacked(t))
    return WeightLayout(
        readaround_cold_bytes=_readaround(tensors, tied, trunk, nextn_kept, nextn_only),
        file_bytes=file_bytes,
        token_embd_bytes=token_embd,
        input_bytes=inputs,
        # Tied: the output layer is a device copy of token_embd; the small rest stays counted.
        output_bytes=(token_embd if tied else output) + other,
        output_in_file=not tied,
        block_bytes=blocks,
        cpu_repack_bytes=repack,
        expert_bytes=routed,
        exact=True,
        output_repack_bytes=output_repack,
    )


def _readaround(
    tensors: list[TensorInfo],
    tied: bool,
    trunk: int,
    kept: tuple[str, ...] = (),
    only: tuple[str, ...] = (),
) -> list[int]:
    """Cold bytes (never read by a decode once loaded: repacked sources, an untied
    token_embd whose rows are looked up, skipped MTP blocks) that faults on hot tensors pull
    in, file order, for each window of READAROUND_WINDOWS.

    A fault in a mapping reads a window centred on the faulting page (mm/filemap.c,
    do_sync_mmap_readahead), so each side of a hot run pulls up to half a window of the cold
    run beside it; a cold run between two hot ones gives at most its own size. Tensors are
    taken in table order (their offsets ascend), alignment padding ignored.
    """
    runs: list[list[int]] = []  # [bytes, hot]
    for t in tensors:
        hot = int(
            not _repacked(t)
            and not _skipped(t, trunk, kept, only)
            and (tied or t.name != "token_embd.weight")
            and t.name not in _INPUT_TABLES
        )
        if runs and runs[-1][1] == hot:
            runs[-1][0] += t.n_bytes
        else:
            runs.append([t.n_bytes, hot])
    # each cold run: its size and how many hot neighbours it has
    cold = [
        (size, (i > 0 and runs[i - 1][1]) + (i + 1 < len(runs) and runs[i + 1][1]))
        for i, (size, hot) in enumerate(runs)
        if not hot
    ]
    return [sum(min(size, sides * (w // 2)) for size, sides in cold) for w in READAROUND_WINDOWS]


def _quant_label(header: GGUFHeader, tensors: list[TensorInfo]) -> str:
    field = header.kv.get("general.file_type")
    if field is not None:
        file_type = _int_value("general.file_type", field, U32_MAX, "")
        label = LLAMA_FTYPE_LABELS.get(file_type & ~_FTYPE_GUESSED)
        if label:
            return label
    by_type: Counter[str] = Counter()
    for t in tensors:
        by_type[t.ggml_type] += t.n_bytes
    return by_type.most_common(1)[0][0] if by_type else "unknown"


def _general_name(header: GGUFHeader) -> str | None:
    """general.name when it is one clean line of text (it is printed and rendered)."""
    field = header.kv.get("general.name")
    if field is None:
        return None
    if field.type != STRING:
        raise HeaderError(f"general.name is {field.type_name}; llama.cpp needs a STRING")
    value = field.value
    if not isinstance(value, str) or not value.strip() or len(value) > _NAME_MAX:
        return None
    if CONTROL_RE.search(value) or TEMPLATE_RE.search(value) or "\ufffd" in value:
        return None
    return value


def _split_count(header: GGUFHeader) -> int | None:
    field = header.kv.get("split.count")
    if field is None:
        return None
    if field.type not in INT_TYPES:
        raise HeaderError(f"split.count is {field.type_name}, not a whole number")
    return _bounded("split.count", int(field.value), U32_MAX, "")  # type: ignore[arg-type]


def part_labels(paths: list[Path], source: str | None) -> list[str]:
    """How each part is named in errors: its path, or the caller's source for a temp copy."""
    if source is None or source == str(paths[0]):
        return [str(p) for p in paths]
    if len(paths) == 1:
        return [source]
    return [f"{source} (part {i + 1} of {len(paths)})" for i in range(len(paths))]


@dataclass(frozen=True)
class GGUFPart:
    """One file of a GGUF (or split set) as read: its parsed header, size and name in errors."""

    header: GGUFHeader
    size_bytes: int
    label: str


def check_part(part: GGUFPart) -> None:
    """Refuse a part shorter than its own tensor table (a cut download)."""
    try:
        check_complete(part.header, part.size_bytes)
    except HeaderError as exc:
        raise GGUFReadError(part.label, str(exc)) from None


def _one_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where}: {first.get('msg', 'invalid')}"


def facts_from_parts(
    first_part: GGUFPart,
    later_parts: Iterable[GGUFPart],
    *,
    n_parts: int,
    stem: str,
    name: str | None = None,
    source: str,
    total_file_bytes: int | None = None,
) -> ModelFacts:
    """ModelFacts from a split set's parts, each read and checked by the caller
    (deployer.adapters.gguf_files): keys from the first part, tensor tables from all parts.
    `later_parts` is only iterated once the first part's split.count matches `n_parts`;
    `stem` names the model when neither `name` nor the header does."""
    label = first_part.label
    first = first_part.header
    sizes = [first_part.size_bytes]
    tensors = _tensors(first)
    try:
        split_count = _split_count(first)
    except HeaderError as exc:
        raise GGUFReadError(label, str(exc)) from None
    if n_parts > 1 and split_count != n_parts:
        raise GGUFReadError(label, f"split.count is {split_count}, got {n_parts} parts")
    for part in later_parts:
        tensors += _tensors(part.header)
        sizes.append(part.size_bytes)
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise GGUFReadError(label, "a tensor appears in more than one part of the split set")
    try:
        arch = _arch_from_header(first, {t.name: t for t in tensors})
        file_bytes = total_file_bytes or sum(sizes)
        loader = arch.architecture
        skips = loader in _NEXTN_SKIPS_WEIGHTS or loader in _NEXTN_SKIPS_ONLY
        kept, only = _NEXTN_LOADED_ANYWAY.get(loader, ()), _NEXTN_SKIPS_ONLY.get(loader, ())
        layout = layout_from_tensors(
            tensors, arch.n_layer, file_bytes, arch.nextn_layers if skips else 0, kept, only
        )
        quant = _quant_label(first, tensors)
        general_name = _general_name(first)
    except HeaderError as exc:
        raise GGUFReadError(label, str(exc)) from None
    except ValidationError as exc:
        raise GGUFReadError(label, f"unusable metadata: {_one_line(exc)}") from None
    chat_template = first.kv.get("tokenizer.chat_template")
    return ModelFacts(
        name=name or general_name or stem,
        quant=quant,
        arch=arch,
        weights=layout,
        source=source,
        has_chat_template=chat_template is not None and chat_template.type == STRING,
    )
