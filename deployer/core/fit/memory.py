"""Memory fit: what llama.cpp will allocate on each device for a model and its settings.

Components follow llama.cpp's own buffers (the `... buffer size = X MiB` lines it logs):
weights placed per device, KV cache (padded cells, sliding-window layers at their window),
recurrent state, the compute buffer, the host output buffer, and per-device runtime overhead.
Formulas and their sources: docs/fit.md and ../shared/reference/fit_methods.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from deployer.core.model.facts import ModelArch, ModelFacts, WeightLayout
from deployer.core.units import GIB, MIB

KV_BYTES_PER_ELEMENT: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q5_1": 24 / 32,
    "q5_0": 22 / 32,
    "q4_1": 20 / 32,
    "q4_0": 18 / 32,
    "iq4_nl": 18 / 32,
}
KV_TYPES = tuple(KV_BYTES_PER_ELEMENT)
CTX_PAD = 256

DeviceKind = Literal["gpu", "apple", "cpu"]

# How llama-server holds the weights (its --load-mode; older builds: --no-mmap, --mlock).
# "auto" is mmap wherever the devices support it (CPU, CUDA, Metal); "dio" reads with direct I/O
# into anonymous buffers, like "none" without the page cache.
LOAD_MODES = ("mmap", "none", "mlock", "mmap+mlock", "dio")
DEFAULT_LOAD_MODE = "mmap"
_MAPPED_MODES = ("mmap", "mmap+mlock")
WEIGHTS_HELD = {
    "mmap": "memory-mapped",
    "none": "read into memory",
    "mlock": "read into locked memory",
    "mmap+mlock": "memory-mapped and locked",
    "dio": "read into memory (direct I/O)",
}


def load_mode_of(mode: str | None) -> str:
    """The load mode the fit assumes for a --load-mode value (None and auto: mmap)."""
    if mode is None or mode == "auto":
        return DEFAULT_LOAD_MODE
    if mode not in LOAD_MODES:
        raise ValueError(f"unknown load mode '{mode}'")
    return mode


def pad(n: int, multiple: int) -> int:
    """Round `n` up to a multiple of `multiple` (ggml's GGML_PAD)."""
    return (n + multiple - 1) // multiple * multiple


@dataclass(frozen=True)
class FitSettings:
    """Runtime settings that change memory: llama-server's -c, -np, -ctk/-ctv, -fa, -ub, -ngl."""

    ctx: int
    parallel: int = 1
    kv_type_k: str = "f16"
    kv_type_v: str = "f16"
    flash_attention: bool = True
    n_ubatch: int = 512
    n_gpu_layers: int = 0
    kv_unified: bool = False  # llama-server with an explicit -np: one stream per slot
    ctx_is_per_slot: bool = False  # Ollama: num_ctx per slot, allocated x num_parallel
    load_mode: str = DEFAULT_LOAD_MODE  # one of LOAD_MODES (llama-server --load-mode)
    prompt_cache_mib: int = 0  # llama-server --cache-ram: earlier prompts' KV kept in host RAM

    @property
    def streams(self) -> int:
        """KV streams: one per slot, or a single shared one with --kv-unified."""
        return 1 if self.kv_unified else self.parallel

    @property
    def cells_per_stream(self) -> int:
        """Cells of one stream, padded as llama.cpp pads n_ctx and n_ctx_seq."""
        total = pad(self.ctx * self.parallel if self.ctx_is_per_slot else self.ctx, CTX_PAD)
        return pad(total // self.streams, CTX_PAD)

    @property
    def kv_cells(self) -> int:
        """Total KV cells over all streams."""
        return self.cells_per_stream * self.streams


@dataclass
class DeviceMemory:
    """Bytes one device (or the host) needs, by component.

    `weights_bytes` is what the weights keep resident (what the budget counts);
    `logged_weights_bytes` is what llama-server logs as model buffers. They differ on the host
    when weights are memory-mapped and the CPU backend repacks some of them: the log counts the
    mapping and the repacked copies, but the mapped pages of repacked tensors are read once and
    are reclaimable page cache, so the working set holds those tensors once.
    """

    name: str
    weights_bytes: int = 0
    logged_weights_bytes: int = 0
    repack_bytes: int = 0  # copies the CPU backend repacked (CPU_REPACK), part of both numbers
    weights_held: str = ""  # the load mode on the host; "" on a GPU (device buffers)
    kv_cache_bytes: int = 0
    compute_bytes: int = 0
    output_bytes: int = 0
    overhead_bytes: int = 0
    prompt_cache_bytes: int = 0  # host only: llama-server's prompt cache, at its --cache-ram
    checkpoint_bytes: int = 0  # host only: context checkpoints (sliding-window/recurrent models)
    budget_bytes: int = 0
    layers: int = 0
    blocks: list[int] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        """Everything this device must hold."""
        return (
            self.weights_bytes
            + self.kv_cache_bytes
            + self.compute_bytes
            + self.output_bytes
            + self.overhead_bytes
            + self.prompt_cache_bytes
            + self.checkpoint_bytes
        )

    @property
    def logged_buffers_bytes(self) -> int:
        """The buffers llama-server logs for this device (model + KV + compute + output)."""
        return (
            self.logged_weights_bytes + self.kv_cache_bytes + self.compute_bytes + self.output_bytes
        )

    @property
    def fits(self) -> bool:
        """Whether the total is within the budget."""
        return self.total_bytes <= self.budget_bytes

    def as_dict(self) -> dict[str, int | str]:
        """JSON form (the `memory`/`devices` contract of `deployer plan --json`)."""
        return {
            "name": self.name,
            "weights_bytes": self.weights_bytes,
            "logged_weights_bytes": self.logged_weights_bytes,
            "logged_buffers_bytes": self.logged_buffers_bytes,
            "repack_bytes": self.repack_bytes,
            "weights_held": self.weights_held,
            "kv_cache_bytes": self.kv_cache_bytes,
            "compute_bytes": self.compute_bytes,
            "output_bytes": self.output_bytes,
            "overhead_bytes": self.overhead_bytes,
            "prompt_cache_bytes": self.prompt_cache_bytes,
            "checkpoint_bytes": self.checkpoint_bytes,
            "total_bytes": self.total_bytes,
            "budget_bytes": self.budget_bytes,
            "layers": self.layers,
        }


@dataclass
class MemoryEstimate:
    """Per-device memory of one model + settings on one machine."""

    devices: list[DeviceMemory]
    host: DeviceMemory
    n_gpu_layers: int
    notes: list[str] = field(default_factory=list)
    cold_weights_bytes: int = 0  # mapped host tensors read a row at a time, not held

    @property
    def fits(self) -> bool:
        """Every device and the host within budget."""
        return all(d.fits for d in self.devices) and self.host.fits


# Linux's default read_ahead_kb for a block device; a disk may be set higher (this project's CI
# VM: 8 MiB). `--detect` reads the machine's own (Profile.disk_read_ahead_kb).
DEFAULT_READ_AHEAD_BYTES = 128 * 1024


@dataclass(frozen=True)
class MachineSpec:
    """What the fit needs of a machine: device budgets and overheads (from a profile)."""

    kind: DeviceKind
    device_count: int
    device_budget_bytes: int  # usable for buffers after our safety margin
    device_overhead_bytes: int  # runtime context per device (CUDA context; 0 on Metal/CPU)
    host_budget_bytes: int
    device_name: str = "GPU"
    cpu_threads: int = 0  # hardware threads llama-server sizes its pools by (0: not known)
    read_ahead_bytes: int = DEFAULT_READ_AHEAD_BYTES  # the model disk's read-around window


# --- KV cache ---------------------------------------------------------------------------------


def kv_cells_for_layer(arch: ModelArch, layer: int, s: FitSettings) -> int:
    """Cells the cache holds for `layer`: the full context, or the sliding window."""
    per_stream = _swa_cells_per_stream(arch, s) if arch.is_swa(layer) else s.cells_per_stream
    return per_stream * s.streams


# Run without flash attention: llama_init_from_model turns it off for Grok ("flash_attn is
# not compatible with Grok - forcing off"), and PLM's graph aborts with it on (a shape
# assertion at one slot, the V-cache copy at more); a transposed V cache and the f32 KQ matrix.
NO_FLASH_ATTENTION_ARCHS = frozenset({"grok", "plm"})


def as_run(arch: ModelArch, s: FitSettings) -> FitSettings:
    """The settings llama.cpp runs `arch` with: flash attention off where it forces it off."""
    if s.flash_attention and arch.architecture in NO_FLASH_ATTENTION_ARCHS:
        return replace(s, flash_attention=False)
    return s


def kv_layer_bytes(arch: ModelArch, layer: int, s: FitSettings, cells: int | None = None) -> int:
    """KV bytes of one layer (0 for recurrent layers), its indexer cache included: of all its
    cells, or of `cells` of its main cache (a checkpoint's share; the indexer is not one)."""
    if arch.no_memory:  # an embedding or diffusion model: no cache at all
        return 0
    s = as_run(arch, s)
    if arch.compress_ratios:
        return _dsv4_layer_bytes(arch, layer, s, cells)
    bk = KV_BYTES_PER_ELEMENT[s.kv_type_k]
    bv = KV_BYTES_PER_ELEMENT[s.kv_type_v]
    index = indexer_layer_bytes(arch, layer, s) if cells is None else 0
    if cells is None:
        cells = kv_cells_for_layer(arch, layer, s)
    n_kv = arch.n_head_kv[layer]
    if not n_kv and arch.recurrent_state_bytes_per_seq:
        return (
            index  # a hybrid's recurrent layer (Kimi's delta-attention ones too): its state apart
        )
    if arch.reuses_cache(layer):  # an earlier layer's cache serves it (Gemma 3n/4)
        return index
    head_k, head_v = arch.head_dims(layer)  # a windowed layer's heads may differ (Gemma 4)
    if arch.mla:
        # MLA caches the compressed latent and its rope part as K (one head of key_length),
        # no V (llama_kv_cache: has_v = !is_mla).
        return int(cells * n_kv * head_k * bk) + index
    if not n_kv and layer >= arch.n_layer - arch.nextn_layers:
        return index  # an MTP block, which the main context's cache leaves out
    if not n_kv:
        # A layer without KV heads in a model with no recurrent state (DeciLM's attention-free
        # layers) still gets a cache; without flash attention its transposed V is as wide as
        # the widest layer's (llama_kv_cache: n_embd_v_gqa_max when v_trans), its K empty.
        return 0 if s.flash_attention else int(cells * arch.n_embd_v_max * bv)
    # Without flash attention V is stored transposed, every layer as wide as the widest
    # (llama_kv_cache: n_embd_v_gqa_max when v_trans); models whose KV heads or head sizes vary
    # by layer hold more V than their heads say.
    n_embd_v = n_kv * head_v if s.flash_attention else arch.n_embd_v_max
    return int(cells * (n_kv * head_k * bk + n_embd_v * bv)) + index


# DeepSeek 4's memory (llama_kv_cache_dsv4): per sequence, always (its streams are per sequence
# even where the KV cache is unified),
# - a raw K-only cache of one window, pad(min(n_ctx_seq, window + ubatch), 256) cells;
# - on a layer with a compress ratio r (4 or 128), a K-only cache of pad(ceil(n_ctx_seq / r),
#   256) compressed rows, and for r = 4 the lightning indexer's keys over as many rows;
# - the compressors' f32 state (a value and a score plane): 2r rows of 2 x head for r = 4,
#   r rows of head for r = 128, and 8 rows of 2 x indexer head for the indexer's.
_DSV4_CSA = 4


def _dsv4_state_bytes(arch: ModelArch, layer: int) -> int:
    """The compressors' f32 state one sequence keeps on `layer` (checkpointed with the window)."""
    ratio = arch.compress_ratios[layer]
    head = arch.head_dims(layer)[0]
    if ratio == _DSV4_CSA:
        return 2 * 4 * (2 * ratio * 2 * head + 2 * ratio * 2 * arch.indexer_k)
    return 2 * 4 * ratio * head if ratio else 0


def _dsv4_layer_bytes(arch: ModelArch, layer: int, s: FitSettings, cells: int | None) -> int:
    bk = KV_BYTES_PER_ELEMENT[s.kv_type_k]
    row = arch.n_head_kv[layer] * arch.head_dims(layer)[0]
    if cells is not None:  # a checkpoint's share of the window
        return int(cells * row * bk)
    ctx_seq = s.cells_per_stream
    per_seq = _swa_cells_per_stream(arch, s, per_sequence=True) * row * bk
    ratio = arch.compress_ratios[layer]
    if ratio:
        rows = pad(max(1, -(-ctx_seq // ratio)), CTX_PAD)
        per_seq += rows * (row + (arch.indexer_k if ratio == _DSV4_CSA else 0)) * bk
        per_seq += _dsv4_state_bytes(arch, layer)
    return int(per_seq * s.parallel)


def indexer_layer_bytes(arch: ModelArch, layer: int, s: FitSettings) -> int:
    """The sparse-attention indexer cache of one layer (DeepSeek 3.2, GLM-5, MiniMax-M3, ...):
    a second llama_kv_cache of one key head per cell over the whole context (never windowed:
    llama.cpp sizes it as the main cache, or as the full half of a windowed one), K only
    unless the indexer keeps a V row too (MiniMax-M3's, not an MLA cache; transposed as wide
    as the widest V head without flash attention)."""
    if not arch.has_indexer(layer):
        return 0
    cells = s.cells_per_stream * s.streams
    k = arch.indexer_k * KV_BYTES_PER_ELEMENT[s.kv_type_k]
    v = 0.0
    if arch.indexer_v:
        width = arch.indexer_v if s.flash_attention else max(arch.indexer_v, arch.head_dim_v_swa)
        v = width * KV_BYTES_PER_ELEMENT[s.kv_type_v]
    return int(cells * (k + v))


def kv_bytes(arch: ModelArch, layers: range | list[int], s: FitSettings) -> int:
    """KV bytes of the given layers."""
    return sum(kv_layer_bytes(arch, i, s) for i in layers)


# llama-server's context checkpoints (--ctx-checkpoints, 32 a slot by default): for a model
# whose memory cannot be rolled back (sliding-window layers, recurrent state) every completion
# saves the slot's unrollable part in host RAM, so that a later prompt sharing a prefix can
# resume from it. deployer renders this many and the plan holds them.
CTX_CHECKPOINTS = 3


def checkpoint_bytes(arch: ModelArch, s: FitSettings) -> int:
    """Host bytes of the context checkpoints of every slot: CTX_CHECKPOINTS a slot, each the
    slot's sliding-window KV and recurrent state. A checkpoint saves only the cells inside the
    window (llama.cpp skips the masked ones): at most the window's tokens, or the slot's cells
    when the slot is shorter. None for a model that can roll its memory back, and none under
    Ollama."""
    if s.ctx_is_per_slot or arch.no_memory:
        return 0
    window_kv = sum(
        kv_layer_bytes(
            arch, i, s, min(kv_cells_for_layer(arch, i, s) // s.streams, arch.sliding_window)
        )
        for i in range(arch.n_layer)
        if arch.is_swa(i)
    )
    per_slot = window_kv + arch.recurrent_state_bytes_per_seq
    if arch.compress_ratios:  # DeepSeek 4 checkpoints its compressors' state with the window
        per_slot += sum(_dsv4_state_bytes(arch, i) for i in range(arch.n_layer))
    return CTX_CHECKPOINTS * s.parallel * per_slot


def recurrent_bytes(arch: ModelArch, layers: range | list[int], s: FitSettings) -> int:
    """Recurrent state (f32, per sequence) of the recurrent ones among `layers`: llama.cpp keeps
    each layer's state on the device that runs the layer."""
    if not arch.recurrent_state_bytes_per_seq or arch.no_memory:
        return 0
    total = sum(arch.is_recurrent(i) for i in range(arch.n_layer))
    here = sum(arch.is_recurrent(i) for i in layers)
    return arch.recurrent_state_bytes_per_seq * s.parallel * here // max(total, 1)


# --- compute buffer ---------------------------------------------------------------------------

# Calibrated against llama-server 11434 on the CPU backend: 17 settings of the demo model
# reproduced to 0.02 MiB (benchmarks/fit_accuracy.py, docs/fit.md). The worst-case graph is
# n_ubatch tokens attending over one stream's cells; the allocator's peak is the activations of
# one layer plus the attention mask(s), plus the f32 KQ matrix when flash attention is off.
PARTIAL_OFFLOAD_COMPUTE_FACTOR = 2.0
_PER_TOKEN_SLACK_FLOATS = 16


def _swa_cells_per_stream(arch: ModelArch, s: FitSettings, *, per_sequence: bool = False) -> int:
    """A windowed cache's cells in one stream: the window for every sequence the stream holds
    (one, unless the cache is unified or `per_sequence` streams are forced) plus a ubatch."""
    seqs = s.parallel if s.kv_unified and not per_sequence else 1
    return pad(min(s.cells_per_stream, arch.sliding_window * seqs + s.n_ubatch), CTX_PAD)


def _graph_tokens(s: FitSettings) -> int:
    """Tokens of the worst-case graph llama.cpp reserves its compute buffers for: a ubatch, or
    the whole context when that is smaller (llama_context's min(n_ctx, n_ubatch)), spread over
    the streams; each stream's tokens attend over that stream's cells."""
    return min(s.n_ubatch, s.kv_cells)


def _attended_cells(arch: ModelArch, s: FitSettings) -> int:
    """Cells a token attends over in the worst-case graph's widest attention: a full stream,
    the window where every attention layer slides (an LFM2 or Gemma 3n file with no full
    layer: llama_memory_hybrid_iswa then builds only the windowed inputs), none where no
    layer attends (Mamba, RWKV: their graphs build no mask and no KQ)."""
    if not any(arch.n_head_kv):
        return 0 if arch.recurrent_state_bytes_per_seq else s.cells_per_stream
    return s.cells_per_stream if _full_attention(arch) else _swa_cells_per_stream(arch, s)


def _full_attention(arch: ModelArch) -> bool:
    """Whether some layer attends over the whole context (DeepSeek 4 attends its compressed
    rows over it, though every layer slides)."""
    full = any(kv and not arch.is_swa(i) for i, kv in enumerate(arch.n_head_kv))
    return full or bool(arch.compress_ratios)


def _mask_bytes(arch: ModelArch, s: FitSettings) -> int:
    """The attention mask(s) of the worst-case graph: f16 with flash attention, else f32."""
    n_kv = _attended_cells(arch, s)
    if not n_kv:
        return 0
    ub = _graph_tokens(s)
    n_kv_swa = _swa_cells_per_stream(arch, s) if arch.sliding_window and arch.swa_layers else 0
    if n_kv_swa and not _full_attention(arch):
        n_kv = 0  # every attention layer slides: the windowed mask alone
    return (2 if s.flash_attention else 4) * ub * (n_kv + n_kv_swa)


def _v_index_bytes(arch: ModelArch, s: FitSettings) -> int:
    """The graph input that says where each new V element goes. Without flash attention the V
    cache is stored transposed, so it holds one int64 per token per V element of the widest
    layer, per KV cache (llama_kv_cache::build_input_v_idxs; a sliding-window model keeps a
    second cache for its windowed layers); with flash attention one per token, nothing to
    count. Counted in the compute buffer (compute_bytes) and, on a GPU server, in the host's
    staging of the inputs the devices are sent."""
    if s.flash_attention:
        return 0
    ub = _graph_tokens(s)
    caches = 2 if arch.sliding_window and arch.swa_layers else 1
    return 8 * ub * arch.n_embd_v_max * caches


# Gemma 3n's alternating updates: four n_embd-wide streams through every layer (n_altup).
_ALTUP_ARCHS = frozenset({"gemma3n"})
_LIGHTNING_ARCHS = frozenset({"minimax-01"})
# A fused QKV whose Q is never roped (ALiBi or learned positions): Q, K and V stay views of
# the whole row until the KQ product (llm_graph_context::build_qkv), two K widths more alive
# without flash attention (read off small GPT-2, StarCoder, MPT, BLOOM and JAIS files).
_FUSED_QKV_UNROPED_ARCHS = frozenset({"gpt2", "starcoder", "mpt", "bloom", "jais"})
# MiniCPM 3 and PLM decompress K and V per head from the latent (wkv_b) and concatenate the
# rope part: Q-wide K rows and the V rows beside Q (read off 144 small variants).
_KV_B_SPLIT_ARCHS = frozenset({"minicpm3", "plm"})


# The worst-case graph is reserved for every slot at once (n_seqs = slots): a recurrent
# layer's op writes each slot's new state beside its output, and the state rows gathered from
# the cache sit beside the layer's peak. Read off llama-server's log:
# - Mamba and Mamba 2 layers (Jamba, PLaMo 2, Falcon-H1, Nemotron-H, Granite 4 hybrids), RWKV's
#   time mix and Kimi's delta attention: about two of a layer's states a slot (small files,
#   1-64 slots);
# - the gated delta nets (Qwen3-Next, Qwen3.5) and the rest: one slot's rows sit under the peak
#   (a real-shaped Qwen3.5 9B is exact without them at 1 slot), every further slot adds
#   (+30.5 MiB at 16 slots, a 2.1 MiB state a layer): two states a slot beyond the first.
_STATE_BESIDE_PEAK_ARCHS = frozenset(
    {"mamba", "mamba2", "jamba", "plamo2", "falcon-h1", "nemotron_h", "nemotron_h_moe",
     "granitehybrid", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7", "kimi-linear", "kimi-k3"}
)  # fmt: skip


def _graph_state_bytes(arch: ModelArch, s: FitSettings) -> int:
    """A recurrent layer's states as the worst-case graph holds them beside its peak: the
    slots' rows gathered from the cache and the new ones written, a layer's worth each."""
    layers = sum(arch.is_recurrent(i) for i in range(arch.n_layer))
    if not layers:
        return 0
    seqs = min(s.parallel, _graph_tokens(s))
    if arch.architecture not in _STATE_BESIDE_PEAK_ARCHS:
        seqs -= 1
    return 2 * seqs * arch.recurrent_state_bytes_per_seq // layers


# Qwen3-Next and Qwen3.5 project Q twice as wide and split off a gate, which stays alive
# until it multiplies the attention's output.
_GATED_Q_ARCHS = frozenset({"qwen3next", "qwen35", "qwen35moe", "qwen4exp"})
_POOLED_INDEXER_ARCHS = frozenset({"glm5-next", "qwen4exp"})
# Graphs that carry one more n_embd-wide row through every layer: Talkie's normalized embedding
# (each layer adds it back, scaled), HRM-Text's high-level state while its low-level stack runs
# (read off small files against llama-server's log: 0.23-0.49 MiB under at ubatch 512 without).
_CARRIED_ROW_ARCHS = frozenset({"talkie", "hrm_text"})
# Attention and feed-forward side by side from one input (x + attn(norm(x)) + ffn(norm(x))):
# the attention's output and the block's input both wait beside the feed-forward for the
# final sum, one n_embd-wide row more than a block that adds the attention in first (Command
# R and R7B, Cohere 2 MoE, Phi-2, Falcon, PLaMo, GPT-NeoX with its parallel residual, by
# their graphs in src/models/). Found on a held-out full-size Command R7B (8 MiB under at
# ubatch 512 without it); the small files' attention half had hidden it. Where a NeoX file
# turns the parallel residual off, the row is an upper bound.
_PARALLEL_BLOCK_ARCHS = frozenset(
    {"command-r", "cohere2", "cohere2moe", "phi2", "falcon", "plamo", "gptneox"}
)
# Chameleon's graph masks its 8192 image-token logits with a tensor made for it, a graph leaf.
_CHAMELEON_IMAGE_TOKENS = 8192

# Graphs whose attention unmasks the indexer's selected cells with a zero-filled tensor made per
# layer (llm_graph_context::build_attn's top-k path: DeepSeek 3.2, GLM-5, HY-V4, dots3note's
# full layers; DeepSeek 4's build_top_k_mask on its layers compressed by 4).
_TOP_K_MASK_ARCHS = frozenset({"deepseek32", "glm-dsa", "hy_v4", "dots3note"})


def compute_bytes(arch: ModelArch, s: FitSettings, *, gpu: bool = False) -> int:
    """Compute buffer of the worst-case graph (_graph_tokens tokens, each against a full
    stream of cells)."""
    s = as_run(arch, s)
    n_kv = _attended_cells(arch, s)
    ub = _graph_tokens(s)
    n_embd_k = arch.n_embd_k_max
    n_embd_v = arch.n_embd_v_max
    n_q = arch.n_head * arch.head_dim_k_max
    ff_moe = (arch.n_ff * arch.n_expert_used if arch.n_expert else arch.n_ff) or 4 * arch.n_embd
    # An MoE's dense layers (DeepSeek's leading blocks, Llama 4's interleaved ones) and its
    # shared expert run their own feed-forward, wider than the routed experts' sum at times
    # (checked against llama-server on small GLM-4.5, Ling 2, AFMoE and Llama 4 files): the
    # feed-forward half is as wide as the widest.
    ff = max(ff_moe, arch.n_ff_dense, arch.n_ff_shared)
    x = arch.n_embd_input_extra  # Gemma 3n's per-layer inputs: floats a token
    altup = arch.architecture in _ALTUP_ARCHS
    # ggml's allocator reuses memory, so the buffer is the largest set of tensors alive at once:
    # in the attention half of a layer, or in its feed-forward half (gate, up and their
    # product, ff wide each, beside five n_embd-wide rows: residual, norm, input and outputs).
    attn = 2 * ff_moe + 3 * arch.n_embd + n_embd_k + _PER_TOKEN_SLACK_FLOATS
    ffn = 3 * ff + 5 * arch.n_embd + _PER_TOKEN_SLACK_FLOATS
    if arch.n_expert:
        # MoE: the experts' down projections come out n_embd wide per expert used and are
        # weighted into a second tensor of that size, beside one expert activation and the
        # residual rows. An upper bound: ggml's allocator lands 0-64 MiB under it on synthetic
        # qwen3moe/olmoe variants (benchmarks/compute_probe.py), where the dense formula was up
        # to 64 MiB under.
        ffn = max(ffn, 2 * arch.n_embd * arch.n_expert_used + ff_moe + 5 * arch.n_embd)
        if arch.n_ff_shared:
            # beside a shared expert the routed experts' outputs stay alive, n_embd wide each
            # (Llama 4, read off small files: exact at 1, 2 and 4 experts used)
            e_used = arch.n_expert_used * arch.n_embd
            ffn = max(ffn, 3 * ff_moe + 5 * arch.n_embd + e_used + _PER_TOKEN_SLACK_FLOATS)
    if arch.architecture in _PARALLEL_BLOCK_ARCHS:
        ffn += arch.n_embd  # the attention's output waits beside the feed-forward
    # A recurrent layer's mixer (Mamba's projections, convolution and scan; RWKV's time mix)
    # in place of attention on its layers.
    ffn = max(ffn, arch.mixer_floats)
    state = _graph_state_bytes(arch, s)
    if not n_kv:  # no layer attends: no mask, no KQ, no cache indices
        return 4 * ub * ffn + state
    mask = _mask_bytes(arch, s)
    if s.flash_attention:
        attn += 3 * n_q  # f16 copies of Q and the attention output in FA's layout
        # Gemma 3n's four altup streams add 15 n_embd-wide rows to the attention half; per-layer
        # inputs keep two copies of their rows alive through every layer.
        act = 4 * ub * (max(attn + (15 * arch.n_embd if altup else 0), ffn) + 2 * x)
        if arch.architecture in _KV_B_SPLIT_ARCHS:
            # MiniCPM 3's decompressed K and V per head beside Q (and the query's halves)
            kv_b = arch.n_head * (arch.head_dim_k - arch.n_rot + arch.head_dim_v)
            rows = 5 * arch.n_embd + 2 * n_q + 2 * kv_b + arch.n_head * arch.head_dim_v
            act = max(act, 4 * ub * (rows + _PER_TOKEN_SLACK_FLOATS))
    else:
        kq = 4 * ub * n_kv * arch.n_head  # the f32 KQ matrix, alive in the attention half only
        if arch.mla:
            # An MLA cache holds K alone and V is a view of it, not stored transposed: the
            # attention copies it transposed (build_attn_mha's v_cont, K's type) beside KQ. Read off
            # small DeepSeek 3.2 and GLM-5 files from ctx 2048 to 32768 (3.4 MiB under at
            # 32768 without it).
            v_bytes = max(2.0, KV_BYTES_PER_ELEMENT[s.kv_type_k])  # a quantized K copies as f16
            kq += int(v_bytes * n_kv * arch.n_embd_v_max * s.streams)
        # Beside it, read off two-layer variants without flash attention (compute_probe.py
        # --fa off --parallel 4: within 0.02 MiB wherever this half is the larger, MoE and
        # dense): three n_embd-wide and three Q-wide rows, and the V-cache indices, a graph
        # input every layer's cache write reads (an int64 per token per V element per cache:
        # first read as "the new K and V", which weigh the same where K and V are as wide).
        # Being an input they are alive in the feed-forward half too (Gemma 2, two caches, was
        # 8 MiB under there without them). The 2 x ff term above is an envelope, not a
        # tensor: 2-34 MiB above the logged buffer on every full-size shape where it is the
        # largest term, short where an MoE's experts are few or narrow, so the largest of the
        # three is taken.
        v_idx = _v_index_bytes(arch, s)
        q_rows = 4 if arch.architecture in _GATED_Q_ARCHS else 3
        rows = 3 * arch.n_embd + q_rows * n_q
        if arch.architecture in _FUSED_QKV_UNROPED_ARCHS:
            rows += 2 * n_embd_k  # Q, K and V stay views of the fused row until KQ
        if arch.architecture in _KV_B_SPLIT_ARCHS:
            rows = max(rows, 5 * arch.n_embd + n_q + max(n_q, arch.n_head * arch.head_dim_v))
        exact_attn = 4 * ub * (rows + _PER_TOKEN_SLACK_FLOATS) + v_idx
        if altup:
            exact_attn += 4 * ub * 10 * arch.n_embd
        act = max(4 * ub * attn, exact_attn) + kq + 4 * ub * x
        act = max(act, 4 * ub * (ffn + 2 * x) + v_idx)
    if x:
        # ... and at the graph's start hold four: the lookup, its projection, norm and sum
        act = max(act, 4 * ub * (4 * x + 5 * arch.n_embd + _PER_TOKEN_SLACK_FLOATS))
    quant_kv = s.kv_type_k not in ("f16", "bf16", "f32") or s.kv_type_v not in (
        "f16",
        "bf16",
        "f32",
    )
    extra = state
    if arch.indexer_layers:
        # Sparse attention (DeepSeek 3.2's lightning indexer, llama.cpp's fused op): a score
        # per token per cell (f32) and the indexer's own mask (f16), beside the selection mask
        # the attention then reads (f32 without flash attention), the indexer's queries and
        # the selected cells' indices (int32, and their contiguous copy).
        # Read off small DeepSeek 3.2 files against llama-server's log (6 and 10 bytes per
        # token-cell pair with and without flash attention, independent of the indexer's
        # heads; test_fit_architectures.py). Assumed alike for the pooled and block indexers
        # (GLM-5-Next, Qwen4-exp, MiniMax-M3), whose score rows are shorter: an upper bound.
        per_cell = 6 if s.flash_attention else 10
        if arch.architecture == "minimax-m3" and s.flash_attention:
            # MiniMax sparse attention expands its block selection to a per-cell mask for each
            # indexer head (one a KV group): f32 gathered and transposed, then f16, beside the
            # causal mask; 10.75 bytes a token-cell a head read off small files from ctx 4096
            # to 16384 (the plan had 6 in all: 110 MiB under at 16384 x 1 slot)
            per_cell = 11 * max(arch.n_head_kv)  # one indexer head a KV group (checked)
        top_k = min(arch.indexer_top_k, n_kv)
        extra += ub * (n_kv * per_cell + 4 * arch.indexer_q + 8 * top_k)
    extra += _graph_leaf_bytes(arch, s, n_kv, ub)
    if arch.architecture in _CARRIED_ROW_ARCHS:
        extra += 4 * ub * arch.n_embd
    if arch.residual_checkpoints:
        # Kimi-K3's banked layer inputs: the stack, its norm and its scores' product, n_embd
        # wide a checkpoint each (read off small files of 4 to 16 layers: 0.4-8.9 MiB under
        # without, 2.3-5.7 MiB over with)
        extra += 4 * ub * arch.n_embd * 3 * arch.residual_checkpoints
    if arch.architecture in _POOLED_INDEXER_ARCHS and arch.indexer_layers:
        # The pooled and block indexers (GLM-5-Next, Qwen4-exp) score and mask every cell of
        # every stream, not their own stream's alone: up to 1.9 bytes a token per cell beyond
        # the stream's, read off small files at 8 and 16 slots (17-29 MiB under at ctx 32768 x
        # 16 slots without), 3 taken; nothing more with one slot
        extra += 3 * ub * (s.kv_cells - n_kv)
    if arch.architecture in _LIGHTNING_ARCHS:
        # MiniMax-01's lightning attention: a decay matrix of ubatch x ubatch per head, an
        # input always alive, and its exponent and the masked scores beside it in a layer
        # (llama.cpp reserves it with every token in one sequence). Three of them bound what
        # small files logged at ubatch 256 and 512.
        extra += 3 * 4 * ub * ub * arch.n_head
    if arch.n_deepstack:
        # Qwen3-VL's deepstack: the input row is n_embd x (1 + n) wide, in every select branch
        # of the input (token, embedding and mixed batches: llm_graph_context::build_inp_embd),
        # and it stays alive through the layers it feeds. 5n + 2 n_embd-wide rows bound what
        # small Qwen3-VL files logged (n = 3; with and without flash attention).
        extra += 4 * ub * arch.n_embd * (5 * arch.n_deepstack + 2)
    if arch.hyper_connections > 1:
        # Hyper-connections (DeepSeek 4, HY-V4, GLM-5-Next, Qwen4-exp) keep the residual as
        # several streams: two rows that wide beside the rest (1.4 read off small DeepSeek 4
        # files against llama-server's log).
        extra += 4 * ub * 2 * arch.hyper_connections * arch.n_embd
    if arch.compress_ratios:
        # DeepSeek 4 also scores and masks its compressed rows (a row per 4 cells): 3 bytes a
        # row per token bounds what the same files logged from ctx 4096 to 32768.
        extra += 3 * ub * pad(-(-n_kv // 4), CTX_PAD)
    if quant_kv:
        # CPU quantizes the new K/V rows; GPU backends also dequantize a layer's cache to f16.
        extra += 4 * ub * n_embd_k
        if gpu and s.flash_attention:
            extra += 2 * n_kv * (n_embd_k + n_embd_v)
    return act + mask + extra


def _graph_leaf_bytes(arch: ModelArch, s: FitSettings, n_kv: int, ub: int) -> int:
    """Tensors a graph creates without an operation (ggml_new_tensor, then filled): ggml's
    allocator places every such leaf when the graph starts, before any node
    (ggml_gallocr_alloc_graph_impl), so one made per layer holds the buffer's base for all
    layers at once: the sparse-attention graphs' zeros, top-k x tokens a layer (f32; f16 on
    DeepSeek 4 with flash attention); the pooled indexers' zero keys and weights, a query row a
    token per indexer layer at most; Chameleon's image-logit mask, once. Read off small
    DeepSeek 3.2 and GLM-5 files of 2 to 16 layers against llama-server's log: 0.125 MiB a
    layer at top-k 64 and ubatch 512, whatever the context; 4 MiB a layer on the real models
    (top-k 2048), 61 to 78 layers."""
    if arch.architecture == "chameleon":
        return 4 * _CHAMELEON_IMAGE_TOKENS
    if arch.architecture in _POOLED_INDEXER_ARCHS:
        # GLM-5-Next's pzero (indexer head x tokens), Qwen4-exp's pzero and weights (indexer
        # head + heads, x tokens): bounded by the indexer's query width, f32
        return 4 * arch.indexer_q * ub * sum(arch.indexer_layers)
    if not arch.indexer_top_k or not n_kv:
        return 0
    trunk = range(arch.n_layer - arch.nextn_layers)
    if arch.compress_ratios:  # DeepSeek 4: its indexer scores the rows compressed by 4
        rows = pad(-(-n_kv // _DSV4_CSA), CTX_PAD)
        layers = sum(1 for i in trunk if arch.compress_ratios[i] == _DSV4_CSA)
        return (2 if s.flash_attention else 4) * min(arch.indexer_top_k, rows) * ub * layers
    if arch.architecture not in _TOP_K_MASK_ARCHS:
        return 0
    if arch.architecture == "dots3note":
        layers = sum(1 for i in trunk if arch.n_head_kv[i] and not arch.is_swa(i))
    else:
        layers = sum(1 for i in trunk if arch.n_head_kv[i])
    return 4 * min(arch.indexer_top_k, n_kv) * ub * layers


def output_bytes(arch: ModelArch, s: FitSettings) -> int:
    """Host output buffer: one row of f32 logits per sequence (llama_context::output_reserve)."""
    return 4 * arch.n_vocab * s.parallel


# --- placement --------------------------------------------------------------------------------


def offloaded_blocks(n_layer: int, n_gpu_layers: int) -> tuple[list[int], bool]:
    """Blocks on the GPU and whether the output layer is, for llama.cpp's -ngl.

    Current llama.cpp offloads the output layer first and counts it in -ngl: -ngl k puts the
    output plus the last k-1 blocks on the GPU.
    """
    k = max(0, min(n_gpu_layers, n_layer + 1))
    start = n_layer + 1 - k
    return list(range(start, n_layer)), k >= 1


def split_layers(blocks: list[int], n_devices: int) -> list[list[int]]:
    """Split offloaded blocks evenly across identical devices, in order (-sm layer)."""
    if n_devices <= 1:
        return [blocks]
    out: list[list[int]] = []
    n = len(blocks)
    for d in range(n_devices):
        lo, hi = n * d // n_devices, n * (d + 1) // n_devices
        out.append(blocks[lo:hi])
    return out


def host_weight_bytes(
    tensor_bytes: int, repack_bytes: int, load_mode: str, cold_bytes: int = 0
) -> tuple[int, int]:
    """(logged, resident) bytes of the host's weights: `tensor_bytes` of the file's tensors kept
    on the host, `repack_bytes` of them repacked by the CPU backend into a copy.

    mmap: the log counts the whole mapping (CPU_Mapped) plus the copies (CPU_REPACK); the mapped
    pages of repacked tensors are read once and stay as clean, reclaimable page cache, so the
    working set holds each tensor once (the host's overhead adds room for the cold pages the
    kernel reads around the hot ones: readaround_bytes). none, mlock, dio: anonymous
    buffers, each tensor once, repacked ones only in their copy. mmap+mlock: the lock pins the
    mapping up to its last host tensor, repacked sources included, so repacked tensors really
    are held twice. The mapped pages of tensors offloaded to a GPU are likewise read once and
    reclaimable, and not counted. `cold_bytes` of the mapped tensors are read only a row at a
    time (an untied token_embd: get_rows of the prompt's tokens), so under mmap they are not
    held either.
    """
    mode = load_mode_of(load_mode)
    if mode in _MAPPED_MODES:
        logged = tensor_bytes + repack_bytes
        return logged, logged if mode == "mmap+mlock" else tensor_bytes - cold_bytes
    return tensor_bytes, tensor_bytes


def estimate_memory(facts: ModelFacts, s: FitSettings, machine: MachineSpec) -> MemoryEstimate:
    """Bytes per device and on the host for `facts` run with `s` on `machine`."""
    arch, w = facts.arch, facts.weights
    s = as_run(arch, s)
    n = arch.n_layer
    on_device = machine.kind in ("gpu", "apple") and machine.device_count > 0
    ngl = s.n_gpu_layers if on_device else 0
    gpu_blocks, output_on_gpu = offloaded_blocks(n, ngl)
    partial = 0 < ngl < n + 1
    host_blocks = [i for i in range(n) if i not in set(gpu_blocks)]

    lora = w.adapter_block_bytes or [0] * n  # LoRA adapter bytes per block (none: zeros)
    devices: list[DeviceMemory] = []
    if on_device:
        groups = split_layers(gpu_blocks, machine.device_count)
        for d, blocks in enumerate(groups):
            last = d == len(groups) - 1
            holds_output = last and output_on_gpu
            weights = sum(w.block_bytes[i] for i in blocks) + (
                w.output_bytes if holds_output else 0
            )
            weights += sum(lora[i] for i in blocks)  # LoRA pairs sit with their base layer
            dev = DeviceMemory(
                name=f"{machine.device_name}{d}",
                weights_bytes=weights,
                logged_weights_bytes=weights,
                kv_cache_bytes=kv_bytes(arch, blocks, s) + recurrent_bytes(arch, blocks, s),
                overhead_bytes=machine.device_overhead_bytes,
                budget_bytes=machine.device_budget_bytes,
                layers=len(blocks) + (1 if holds_output else 0),
                blocks=blocks,
            )
            compute = compute_bytes(arch, s, gpu=machine.kind == "gpu")
            if partial:
                compute = int(compute * PARTIAL_OFFLOAD_COMPUTE_FACTOR)
            dev.compute_bytes = compute
            devices.append(dev)

    repack = w.cpu_repack_bytes or [0] * n
    # LoRA adapters (llama-adapter.cpp): each pair is copied into a buffer on its base layer's
    # device, never mapped, so on the host it is anonymous memory whatever the load mode.
    host_lora = sum(lora[i] for i in host_blocks) + w.adapter_host_bytes
    host_weights = w.token_embd_bytes + w.input_bytes + sum(w.block_bytes[i] for i in host_blocks)
    if not output_on_gpu:
        host_weights += w.untied_output_bytes
    host_repack = sum(repack[i] for i in host_blocks) if machine.kind == "cpu" else 0
    # The output layer's repacked copy (a "pure" quant's Q4 output.weight, or a tied Q4
    # token_embd): an untied output is one more repacked tensor; a tied one is a duplicate,
    # held beside the table, which is then only looked up (llama-model-loader: the
    # TENSOR_DUPLICATED output gets its own CPU_REPACK buffer).
    tied_copy = 0
    if machine.kind == "cpu" and not output_on_gpu and w.output_repack_bytes:
        host_repack += w.output_repack_bytes
        tied_copy = 0 if w.output_in_file else w.output_repack_bytes
    # The host's token_embd is only looked up a row a token unless the host's output layer
    # multiplies by it (tied embeddings, output not offloaded): mapped, it is not held (measured
    # on CPU; the lookup is the same with a GPU, whose output layer has its own copy). On Apple
    # the table stays counted, as the margin it has always been for the Metal runtime's host
    # memory, which has not been measured; a CUDA/ROCm host gets its own allowance below. Under
    # Ollama (ctx_is_per_slot) it stays counted too: Ollama's own engine reads tensors into
    # buffers, its llama.cpp runner maps the file; counted as held either way (the safe side).
    lookup_only = w.output_in_file or output_on_gpu
    mapped_here = machine.kind != "apple" and not s.ctx_is_per_slot
    # Other input tables (Gemma 3n's per-layer embeddings) are only ever looked up, a row a token.
    cold = (w.token_embd_bytes if lookup_only else 0) + w.input_bytes if mapped_here else 0
    logged, resident = host_weight_bytes(host_weights, host_repack, s.load_mode, cold)
    if tied_copy and load_mode_of(s.load_mode) not in _MAPPED_MODES:
        # read into a buffer, the table is held beside its output copy (mapped, the table's
        # pages are only looked up, which leaves the count at one copy; locked, both count)
        resident += tied_copy
        logged += tied_copy
    host = DeviceMemory(
        name="host",
        weights_bytes=resident + host_lora,
        logged_weights_bytes=logged + host_lora,
        repack_bytes=host_repack,
        weights_held=load_mode_of(s.load_mode),
        kv_cache_bytes=kv_bytes(arch, host_blocks, s) + recurrent_bytes(arch, host_blocks, s),
        output_bytes=output_bytes(arch, s),
        overhead_bytes=host_overhead_bytes(arch, machine.cpu_threads),
        # The server's prompt cache (--cache-ram N) holds saved prompt states up to N MiB,
        # freeing the oldest before it stores another (docs/fit.md "Prompt cache").
        prompt_cache_bytes=s.prompt_cache_mib * MIB,
        checkpoint_bytes=checkpoint_bytes(arch, s),
        budget_bytes=machine.host_budget_bytes,
        layers=len(host_blocks),
        blocks=host_blocks,
    )
    if not on_device:
        host.compute_bytes = compute_bytes(arch, s)
    else:
        # Pinned host staging (CUDA_Host compute): the embedding lookup's output rows, four
        # f32 copies of n_embd x n_ubatch, and the graph's other inputs the devices are sent:
        # the attention mask(s) and, without flash attention, the V-cache indices; plus a full
        # graph when some layers run on the CPU. Read off an H200's logs
        # (benchmarks/results/fit_gpu.json, 14 shapes: within 0.6 MiB with flash attention and
        # without it); the old single copy was 14-64 MiB under.
        host.compute_bytes = (
            # deepstack (Qwen3-VL) widens those input rows to n_embd x (1 + n)
            16 * arch.n_embd * (1 + arch.n_deepstack) * s.n_ubatch
            + _mask_bytes(arch, s)
            + _v_index_bytes(arch, s)
            # the other input tables' lookups (Gemma 3n's per-layer embeddings) run on the CPU
            + 4 * arch.n_embd_input_extra * s.n_ubatch
        )
        if host_blocks:
            host.compute_bytes += compute_bytes(arch, s)
    if host_blocks:
        host.overhead_bytes += cpu_work_bytes(arch, s)
    if machine.kind == "gpu":
        host.overhead_bytes += GPU_RUNTIME_HOST_BYTES
    # The kernel's page tables for what the process touches (a cgroup charges them too), and
    # room to evict and re-read mapped pages at the edge of a limit.
    host.overhead_bytes += page_table_bytes(host.total_bytes - host.overhead_bytes)
    if machine.kind == "gpu" and load_mode_of(s.load_mode) in _MAPPED_MODES:
        # A mapped load uploads each offloaded tensor from the mapping
        # (llama_model_loader::load_all_data: ggml_backend_tensor_set from mapping->addr()), so
        # every offloaded page is touched and holds a page-table entry, 8 B per 4 KiB of the
        # offloaded file (34 MiB for Qwen3-30B-A3B's 18.4 GB): a load-time peak where the
        # loader then unmaps the ranges before and after the host's tensors, for good where
        # offloaded tensors lie between host ones (a partial offload). LoRA pairs are read
        # into buffers, not mapped. Counted under Ollama too: its llama.cpp runner maps the
        # file (its own engine reads tensors into buffers; the safe side either way).
        offloaded = sum(d.weights_bytes for d in devices) - sum(lora[i] for i in gpu_blocks)
        host.overhead_bytes += page_table_bytes(offloaded)
    if load_mode_of(s.load_mode) == "mmap" and host.weights_bytes:
        host.overhead_bytes += readaround_bytes(w, machine, len(host_blocks))
    # What host_weight_bytes left out of the resident figure (only a mapped load leaves any).
    not_held = max(0, host_weights - resident)
    return MemoryEstimate(devices=devices, host=host, n_gpu_layers=ngl, cold_weights_bytes=not_held)


def readaround_bytes(w: WeightLayout, machine: MachineSpec, host_block_count: int) -> int:
    """Cold mapped bytes (repacked sources, an untied token_embd) that the kernel's read-around
    keeps pulling in beside the hot tensors of a mapped model: room a limit must leave for them
    or the hot pages are evicted in their place. CPU: from the file's tensor order
    (WeightLayout.readaround_bytes). With a GPU the host's cold share differs (offloaded tensors
    are cold there too): three windows a host block, a bound."""
    window = machine.read_ahead_bytes
    if machine.kind == "cpu":
        return w.readaround_bytes(window)
    return 3 * (host_block_count + 1) * window


def cpu_work_bytes(arch: ModelArch, s: FitSettings) -> int:
    """The CPU backend's work buffer beyond what the host overhead already holds, when the host
    computes attention without flash attention.

    ggml-cpu converts a matrix product's f32 operand to the weight's dot type in one work
    buffer outside every logged buffer (ggml_graph_plan's work_size: the largest such operand
    in the graph). Without flash attention the largest is the softmaxed KQ, cells x ubatch x
    heads, multiplied by the V cache and so copied as f16 (Qwen3 4B at ctx 2048: 64 MiB; an
    f32 V cache needs no copy). With flash attention the largest is a feed-forward input,
    ubatch x n_ff at about a byte a weight, which the measured overhead includes
    (benchmarks/host_overhead.py runs with flash attention): only the excess over it is added."""
    s = as_run(arch, s)
    if s.flash_attention or s.kv_type_v == "f32":
        return 0
    kq_f16 = 2 * _attended_cells(arch, s) * s.n_ubatch * arch.n_head
    ffn = s.n_ubatch * arch.n_ff * max(1, arch.n_expert_used) * 34 // 32  # q8_0: 34 B / 32
    return max(0, kq_f16 - ffn)


def page_table_bytes(resident_bytes: int) -> int:
    """x86-64 and arm64 page tables: an 8-byte entry per 4 KiB page touched."""
    return resident_bytes // 512


# The llama-server process beyond its buffers (llama-server 11434, CPU, 2 threads, the host
# prompt cache off as deployer renders it; docs/fit.md "Host overhead"):
# - the binary and its shared libraries' resident pages: RssFile less the mapped weights was
#   14.5-15.1 MiB on every model;
# - anonymous memory beyond the buffers once a prompt has filled a ubatch (a short prompt
#   leaves most of the compute buffer and some of the allocator's arenas untouched, which hid
#   20-50 MiB in earlier measurements): 10-33 MiB on the shapes with 32k-152k vocabularies,
#   53-70 MiB on the 256k-262k ones (the demo's real Gemma 3 tokenizer 53.9); the tokenizer's
#   tables, the slot's sampler (a candidate per token) and the allocator's arenas grow with the
#   vocabulary, not in a straight line. 16 MiB + 232 B a token is an envelope over all ten
#   measured (benchmarks/results/host_overhead.json), not a fit to any: in-sample for each;
# - a byte-level BPE tokenizer's merge table (Llama 3, Qwen, OLMoE, ...): llama.cpp keeps each
#   rule as a pair of strings in a hash table; the shapes' placeholder vocabulary has none.
#   Their .bpe siblings (real kind and merge count) measured beside them
#   (benchmarks/results/host_overhead_bpe.json) held 114-151 B a merge more (Llama 3's 280,147
#   rules, Qwen's 151,387, OLMoE's 50,009); 160 B is a round figure above each pair, not a fit
#   (in-sample for each);
# - thread stacks and per-thread arenas: a compute and an HTTP thread per hardware thread; not
#   separable at 2 threads, so a stated estimate.
# The GPU runtime on the host of a CUDA or ROCm server (the runtime and BLAS libraries' pages,
# the driver's own allocations): an allowance, kept as an upper bound. Measured under a memory
# cgroup (benchmarks/fit_gpu.py --host-caps; four rows on an H200, driver 580: Llama 3.1 8B at
# two settings, Gemma 3 1B, Qwen3-30B-A3B, fully offloaded; benchmarks/results/fit_gpu_host.json)
# the smallest caps were 271-363 MiB, of which 153-231 MiB beyond everything the plan names:
# 1 GiB is 4.4-6.7 times that. Not tightened on four rows (one GPU, one driver; a multi-GPU
# server holds a context per device): too high a limit reserves nothing, too low a one kills the
# server as it starts (docs/fit.md "The host side of a GPU server").
GPU_RUNTIME_HOST_BYTES = GIB
HOST_BINARY_BYTES = 16 * MIB
HOST_BASE_ANON_BYTES = 16 * MIB
HOST_BYTES_PER_VOCAB_TOKEN = 232
HOST_BYTES_PER_MERGE = 160
HOST_BYTES_PER_THREAD = MIB // 4
HOST_THREADS_WHEN_UNKNOWN = 16


def host_overhead_bytes(arch: ModelArch, cpu_threads: int = 0) -> int:
    """The llama-server process beyond its buffers: code, tokenizer, HTTP server and threads."""
    threads = 2 * (cpu_threads or HOST_THREADS_WHEN_UNKNOWN)
    return (
        HOST_BINARY_BYTES
        + HOST_BASE_ANON_BYTES
        + HOST_BYTES_PER_VOCAB_TOKEN * arch.n_vocab
        + HOST_BYTES_PER_MERGE * arch.n_merges
        + HOST_BYTES_PER_THREAD * threads
    )


def safety_margin_bytes(budget: int) -> int:
    """Headroom kept free on a device: llama.cpp's own --fit target, or 5% on big devices."""
    return max(GIB, budget // 20)
