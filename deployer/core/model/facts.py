"""What the memory fit needs to know about a model: its architecture and weight layout.

Both come either from the GGUF header (exact) or from the catalog (published config plus
file sizes; the per-tensor split is then estimated and says so).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

# What llama.cpp accepts (src/llama-hparams.h, the pinned build 11434): load_hparams asserts
# 0 < n_layer <= LLAMA_MAX_LAYERS and n_expert <= LLAMA_MAX_EXPERTS; hparams are uint32_t.
# Facts from a GGUF header are checked against these with messages naming the key
# (deployer/core/model/gguf_meta.py); the bounds here hold for every other source too (the catalog,
# a remembered header), so the fit can loop over layers without a second thought.
LLAMA_MAX_LAYERS = 512
LLAMA_MAX_EXPERTS = 1024
U32_MAX = (1 << 32) - 1
# Encoder-decoder models (T5): llama-server runs them with a relative-position bias and a
# cross-attention sized by the training context, a graph the plan does not model.
ENCODER_DECODER_ARCHS = frozenset({"t5", "t5encoder"})
# Every architecture name the pinned llama.cpp (11434) knows (src/llama-arch.cpp): a file naming
# another is one its llama-server refuses to load ("unknown model architecture").
LLAMA_CPP_ARCHS = frozenset({
    "afmoe", "apertus", "arcee", "arctic", "arwkv7", "baichuan", "bailingmoe", "bailingmoe2",
    "bailingmoe3", "bert", "bitnet", "bloom", "chameleon", "chatglm", "clef", "clip", "codeshell",
    "cogvlm", "cohere2", "cohere2moe", "command-r", "dbrx", "deci", "deepseek", "deepseek2",
    "deepseek2-ocr", "deepseek32", "deepseek4", "dflash", "dots1", "dots3note", "dream", "eagle3",
    "ernie4_5", "ernie4_5-moe", "eurobert", "exaone", "exaone-moe", "exaone4", "falcon",
    "falcon-h1", "gemma", "gemma-embedding", "gemma2", "gemma3", "gemma3n", "gemma4",
    "gemma4-assistant", "glm-dsa", "glm4", "glm4moe", "glm5-next", "gpt-oss", "gpt2", "gptj",
    "gptneox", "granite", "granite_swa", "granitehybrid", "granitemoe", "graniteswitch", "grok",
    "grovemoe", "hrm_text", "hunyuan-dense", "hunyuan-moe", "hunyuan_vl", "hy_v3", "hy_v4",
    "internlm2", "jais", "jais2", "jamba", "jina-bert-v2", "jina-bert-v3", "kimi-k3",
    "kimi-linear", "laguna", "lfm2", "lfm2moe", "llada", "llada-moe", "llama", "llama-embed",
    "llama4", "maincoder", "mamba", "mamba2", "maple", "mellum", "mimo2", "minicpm", "minicpm3",
    "minimax-01", "minimax-m2", "minimax-m3", "mistral3", "mistral4", "modern-bert", "mpt",
    "muse-glimmer", "nanbeige", "nemotron", "nemotron_h", "nemotron_h_moe", "neo-bert",
    "nomic-bert", "nomic-bert-moe", "olmo", "olmo2", "olmoe", "openelm", "orion", "paddleocr",
    "pangu-embedded", "phi2", "phi3", "phimoe", "plamo", "plamo2", "plamo3", "plm", "pockettts",
    "qwen", "qwen2", "qwen2moe", "qwen2vl", "qwen3", "qwen35", "qwen35moe", "qwen3moe",
    "qwen3next", "qwen3tts", "qwen3vl", "qwen3vlmoe", "qwen4exp", "refact", "rnd1", "rwkv6",
    "rwkv6qwen2", "rwkv7", "seed_oss", "smallthinker", "smollm3", "spark2_5", "stablelm",
    "starcoder", "starcoder2", "step35", "t5", "t5encoder", "talkie", "wavtokenizer-dec",
    "xverse",
})  # fmt: skip
# Named by llama.cpp but without a loader (llama_model_mapping has no case for it): refused.
NO_LOADER_ARCHS = frozenset({"gptj"})
# Decision models (CLEF): llama-server serves them on its typed /v1/systemone API with their own
# "systemone" template, and refuses to start without it; not a chat-completion endpoint.
DECISION_ARCHS = frozenset({"clef"})
_U32 = Annotated[int, Field(ge=0, le=U32_MAX)]


class ModelArch(BaseModel):
    """Architecture facts, as llama.cpp reads them from `<arch>.*` GGUF keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: str
    n_layer: int = Field(gt=0, le=LLAMA_MAX_LAYERS)
    n_embd: int = Field(gt=0, le=U32_MAX)
    n_head: int = Field(gt=0, le=U32_MAX)
    n_head_kv: list[_U32] = Field(description="KV heads per layer; 0 marks a layer without KV")
    head_dim_k: int = Field(gt=0, le=U32_MAX)
    head_dim_v: int = Field(gt=0, le=U32_MAX)
    n_ff: _U32
    n_vocab: int = Field(gt=0, le=U32_MAX)
    n_merges: _U32 = Field(
        default=0, description="BPE merges (tokenizer.ggml.merges): the tokenizer's rank table"
    )
    ctx_train: int = Field(gt=0, le=U32_MAX)
    sliding_window: _U32 = 0
    swa_layers: list[bool] = Field(default_factory=list, description="per layer: sliding window")
    n_expert: int = Field(default=0, ge=0, le=LLAMA_MAX_EXPERTS)
    n_expert_used: _U32 = 0
    tied_embeddings: bool = False
    kv_lora_rank: int = Field(
        default=0, ge=0, le=U32_MAX, description="MLA latent rank (DeepSeek-V2/V3)"
    )
    n_rot: int = Field(
        default=0, ge=0, le=U32_MAX, description="MLA rope dims stored beside the latent"
    )
    recurrent_state_bytes_per_seq: int = Field(
        default=0, ge=0, description="f32 recurrent state (Mamba/DeltaNet) summed over layers"
    )
    recurrent_layers: list[bool] = Field(
        default_factory=list,
        description="per layer: holds a recurrent state; empty: every layer, when there is one",
    )
    head_dim_k_swa: int = Field(
        default=0, ge=0, le=U32_MAX, description="K head size of sliding-window layers; 0: same"
    )
    head_dim_v_swa: int = Field(
        default=0, ge=0, le=U32_MAX, description="V head size of sliding-window layers; 0: same"
    )
    kv_layers: int = Field(
        default=0,
        ge=0,
        le=LLAMA_MAX_LAYERS,
        description="layers, from the first, that own a KV cache (llama.cpp's "
        "n_layer_kv_from_start); later ones reuse an earlier layer's; 0: every layer",
    )
    mla: bool = Field(
        default=False,
        description="the cache holds K only, the compressed latent (llama.cpp's is_mla: an "
        "MLA loader and a file stating key_length_mla and value_length_mla)",
    )
    indexer_k: _U32 = Field(
        default=0, description="K elements a cell of a sparse-attention indexer cache holds"
    )
    indexer_v: _U32 = Field(
        default=0, description="V elements a cell of the indexer cache holds (0: K only)"
    )
    indexer_layers: list[bool] = Field(
        default_factory=list, description="per layer: holds an indexer cache; empty: none"
    )
    indexer_q: _U32 = Field(
        default=0, description="query elements a token's indexer scores (heads x key length)"
    )
    indexer_top_k: _U32 = Field(default=0, description="cells the indexer selects per token")
    nextn_layers: int = Field(
        default=0,
        ge=0,
        le=LLAMA_MAX_LAYERS,
        description="MTP (nextn) blocks at the end: no weights without MTP drafting",
    )
    n_embd_input_extra: _U32 = Field(
        default=0,
        description="floats a token's lookup in the other input tables yields (Gemma 3n's "
        "per-layer embeddings: per-layer width x layers)",
    )
    hyper_connections: _U32 = Field(
        default=0, description="residual streams (hyper_connection.count; 0 or 1: one)"
    )
    residual_checkpoints: int = Field(
        default=0,
        ge=0,
        le=LLAMA_MAX_LAYERS,
        description="layer inputs a cross-layer residual attention banks (Kimi-K3: one every "
        "attn_res.block_size layers), alive to the graph's end",
    )
    compress_ratios: list[_U32] = Field(
        default_factory=list,
        description="per layer, DeepSeek 4's compressed caches: 0 none, 4 (with an indexer) or "
        "128 tokens a row; empty: none",
    )
    n_ff_dense: _U32 = Field(
        default=0,
        description="an MoE's widest dense feed-forward (its dense layers' ffn_up rows: "
        "DeepSeek's leading blocks, Llama 4's interleaved ones); 0: none or not known",
    )
    n_ff_shared: _U32 = Field(
        default=0, description="an MoE's shared expert width (ffn_up_shexp rows); 0: none"
    )
    n_deepstack: _U32 = Field(
        default=0,
        description="deepstack inputs (Qwen3-VL, Granite Vision): the input row is n_embd x "
        "(1 + this) wide",
    )
    mixer_floats: _U32 = Field(
        default=0,
        description="floats a token a recurrent layer's mixer keeps alive at once (Mamba's "
        "projections, convolution and scan; RWKV's time mix); 0: none, or within the "
        "feed-forward's",
    )
    no_memory: bool = Field(
        default=False,
        description="llama.cpp gives the context no KV cache or state (embedding and diffusion "
        "models: BERT and its kin, Dream, LLaDA)",
    )

    @model_validator(mode="after")
    def _check_lengths(self) -> ModelArch:
        if len(self.n_head_kv) != self.n_layer:
            raise ValueError("n_head_kv must have one entry per layer")
        if self.swa_layers and len(self.swa_layers) != self.n_layer:
            raise ValueError("swa_layers must be empty or have one entry per layer")
        if self.n_expert_used > self.n_expert:
            raise ValueError("n_expert_used must not exceed n_expert")
        if self.kv_layers > self.n_layer:
            raise ValueError("kv_layers must not exceed n_layer")
        if self.recurrent_layers and len(self.recurrent_layers) != self.n_layer:
            raise ValueError("recurrent_layers must be empty or have one entry per layer")
        if self.nextn_layers >= self.n_layer:
            raise ValueError("nextn_layers must leave at least one layer")
        if self.compress_ratios and len(self.compress_ratios) != self.n_layer:
            raise ValueError("compress_ratios must be empty or have one entry per layer")
        if self.indexer_layers and len(self.indexer_layers) != self.n_layer:
            raise ValueError("indexer_layers must be empty or have one entry per layer")
        if any(self.indexer_layers) and not self.indexer_k:
            raise ValueError("indexer layers need an indexer_k")
        return self

    def is_swa(self, layer: int) -> bool:
        """Whether `layer` uses the sliding-window cache."""
        return bool(self.sliding_window and self.swa_layers and self.swa_layers[layer])

    def is_recurrent(self, layer: int) -> bool:
        """Whether `layer` keeps a recurrent state (on the device that runs it)."""
        if not self.recurrent_state_bytes_per_seq:
            return False
        return self.recurrent_layers[layer] if self.recurrent_layers else True

    def reuses_cache(self, layer: int) -> bool:
        """Whether `layer` reads an earlier layer's KV cache (past kv_layers: Gemma 3n/4)."""
        return bool(self.kv_layers) and layer >= self.kv_layers

    def has_indexer(self, layer: int) -> bool:
        """Whether `layer` keeps a sparse-attention indexer cache beside its KV."""
        return bool(self.indexer_layers) and self.indexer_layers[layer]

    def has_kv(self, layer: int) -> bool:
        """Whether `layer` owns KV cells."""
        return bool(self.n_head_kv[layer]) and not self.reuses_cache(layer)

    def head_dims(self, layer: int) -> tuple[int, int]:
        """(K, V) head size of `layer` (llama_hparams::n_embd_head_k/v(il))."""
        if self.is_swa(layer):
            return self.head_dim_k_swa or self.head_dim_k, self.head_dim_v_swa or self.head_dim_v
        return self.head_dim_k, self.head_dim_v

    @property
    def n_embd_k_max(self) -> int:
        """The widest layer's K row (KV heads x K head size)."""
        return max(kv * self.head_dims(i)[0] for i, kv in enumerate(self.n_head_kv))

    @property
    def n_embd_v_max(self) -> int:
        """The widest layer's V row (llama_hparams::n_embd_v_gqa_max)."""
        return max(kv * self.head_dims(i)[1] for i, kv in enumerate(self.n_head_kv))

    @property
    def head_dim_k_max(self) -> int:
        """The largest K head size of any layer (a query row is heads x this)."""
        return max(self.head_dim_k, self.head_dim_k_swa)


# Read-around windows (bytes) a layout records cold bytes for: Linux's default read_ahead_kb
# (128 KiB) doubling to 16 MiB.
READAROUND_WINDOWS: tuple[int, ...] = tuple((128 << 10) << i for i in range(8))


class WeightLayout(BaseModel):
    """Bytes of the model's tensors, grouped as llama.cpp places them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file_bytes: int = Field(gt=0, description="all files of the model together (split sets summed)")
    token_embd_bytes: int = Field(ge=0, description="input embeddings: always on the host")
    input_bytes: int = Field(
        default=0,
        ge=0,
        description="other input tables looked up a row a token (Gemma 3n's per-layer "
        "embeddings, position embeddings): always on the host, like token_embd",
    )
    output_bytes: int = Field(
        ge=0, description="output.weight + output_norm; with tied embeddings the device copy"
    )
    block_bytes: list[Annotated[int, Field(ge=0)]] = Field(
        description="per repeating block, all its tensors"
    )
    cpu_repack_bytes: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list,
        description="per block: tensors the CPU backend copies into an interleaved layout",
    )
    exact: bool = Field(description="True when read from the GGUF tensor table")
    output_repack_bytes: int = Field(
        default=0,
        ge=0,
        description="the output layer's weight the CPU backend repacks (a repacked type): an "
        "untied output.weight, or with tied embeddings token_embd's duplicate as the output",
    )

    @property
    def tensor_bytes(self) -> int:
        """Bytes of all tensor data (the file minus header and alignment)."""
        return (
            self.token_embd_bytes
            + self.input_bytes
            + sum(self.block_bytes)
            + self.untied_output_bytes
        )

    @property
    def untied_output_bytes(self) -> int:
        """Output-layer bytes that exist in the file: with tied embeddings all but the matrix
        (token_embd, whose device copy is not in the file): output_norm, Gemma 3n's altup
        projections and the like, which llama.cpp loads as any other tensor."""
        if self.output_in_file:
            return self.output_bytes
        return max(0, self.output_bytes - self.token_embd_bytes)

    output_in_file: bool = True
    adapter_block_bytes: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list,
        description="per block: LoRA adapter tensors llama.cpp keeps beside that block's weights",
    )
    adapter_host_bytes: int = Field(
        default=0, ge=0, description="LoRA adapter tensors outside blocks (held on the host)"
    )
    expert_bytes: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None,
        description="per block: routed experts' tensors (ffn_*_exps), of which a token reads "
        "only the experts it is routed to; None: not known (an estimated layout)",
    )
    readaround_cold_bytes: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list,
        max_length=len(READAROUND_WINDOWS),
        description="bytes of tensors a decode never reads (repacked sources, an untied "
        "token_embd) that the kernel's mmap read-around pulls in beside the tensors it does "
        "read, for each window of READAROUND_WINDOWS (file order; empty: not known)",
    )

    def readaround_bytes(self, window: int) -> int:
        """Cold bytes read around the hot tensors with a `window`-byte read-around (the disk's
        read_ahead_kb); the next larger known window when `window` is not one, and every cold
        byte beyond the largest. Not known (an estimated layout): 3 gaps a block, each pulling
        a window, at most the repacked bytes plus token_embd."""
        cold = (
            sum(self.cpu_repack_bytes)
            + (self.token_embd_bytes if self.output_in_file else 0)
            + self.input_bytes
        )
        if not self.readaround_cold_bytes:
            return min(3 * len(self.block_bytes) * window, cold)
        for w, pulled in zip(READAROUND_WINDOWS, self.readaround_cold_bytes, strict=False):
            if window <= w:
                return pulled
        return cold


class ModelFacts(BaseModel):
    """A concrete model file (one quant): what it is and how big its parts are."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    quant: str
    arch: ModelArch
    weights: WeightLayout
    source: str = Field(description="catalog, a local path, or hf://ORG/REPO:QUANT")
    has_chat_template: bool = Field(
        default=True,
        description="the GGUF carries tokenizer.chat_template (catalog files: the publishers' do)",
    )

    @model_validator(mode="after")
    def _check_layers(self) -> ModelFacts:
        n = self.arch.n_layer
        if len(self.weights.block_bytes) != n:
            raise ValueError("weights.block_bytes must have one entry per layer")
        if self.weights.cpu_repack_bytes and len(self.weights.cpu_repack_bytes) != n:
            raise ValueError("weights.cpu_repack_bytes must be empty or have one entry per layer")
        if self.weights.adapter_block_bytes and len(self.weights.adapter_block_bytes) != n:
            raise ValueError("weights.adapter_block_bytes must be empty or one entry per layer")
        experts = self.weights.expert_bytes
        if experts is not None and (
            len(experts) != n
            or any(e > b for e, b in zip(experts, self.weights.block_bytes, strict=True))
        ):
            raise ValueError("weights.expert_bytes must have one entry per layer, within its block")
        return self
