"""What the memory fit needs to know about a model: its architecture and weight layout.

Both come either from the GGUF header (exact) or from the catalog (published config plus
file sizes; the per-tensor split is then estimated and says so).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelArch(BaseModel):
    """Architecture facts, as llama.cpp reads them from `<arch>.*` GGUF keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: str
    n_layer: int = Field(gt=0)
    n_embd: int = Field(gt=0)
    n_head: int = Field(gt=0)
    n_head_kv: list[int] = Field(description="KV heads per layer; 0 marks a layer without KV")
    head_dim_k: int = Field(gt=0)
    head_dim_v: int = Field(gt=0)
    n_ff: int = Field(ge=0)
    n_vocab: int = Field(gt=0)
    ctx_train: int = Field(gt=0)
    sliding_window: int = Field(default=0, ge=0)
    swa_layers: list[bool] = Field(default_factory=list, description="per layer: sliding window")
    n_expert: int = 0
    n_expert_used: int = 0
    tied_embeddings: bool = False
    kv_lora_rank: int = Field(default=0, description="MLA latent rank (DeepSeek-V2/V3)")
    n_rot: int = Field(default=0, description="MLA rope dims stored beside the latent")
    recurrent_state_bytes_per_seq: int = Field(
        default=0, description="f32 recurrent state (Mamba/DeltaNet) summed over layers"
    )

    @model_validator(mode="after")
    def _check_lengths(self) -> ModelArch:
        if len(self.n_head_kv) != self.n_layer:
            raise ValueError("n_head_kv must have one entry per layer")
        if self.swa_layers and len(self.swa_layers) != self.n_layer:
            raise ValueError("swa_layers must be empty or have one entry per layer")
        return self

    def is_swa(self, layer: int) -> bool:
        """Whether `layer` uses the sliding-window cache."""
        return bool(self.sliding_window and self.swa_layers and self.swa_layers[layer])


class WeightLayout(BaseModel):
    """Bytes of the model's tensors, grouped as llama.cpp places them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file_bytes: int = Field(gt=0, description="all files of the model together (split sets summed)")
    token_embd_bytes: int = Field(ge=0, description="input embeddings: always on the host")
    output_bytes: int = Field(
        ge=0, description="output.weight + output_norm; with tied embeddings the device copy"
    )
    block_bytes: list[int] = Field(description="per repeating block, all its tensors")
    cpu_repack_bytes: list[int] = Field(
        default_factory=list,
        description="per block: tensors the CPU backend copies into an interleaved layout",
    )
    exact: bool = Field(description="True when read from the GGUF tensor table")

    @property
    def tensor_bytes(self) -> int:
        """Bytes of all tensor data (the file minus header and alignment)."""
        return self.token_embd_bytes + sum(self.block_bytes) + self.untied_output_bytes

    @property
    def untied_output_bytes(self) -> int:
        """Output bytes that exist in the file (0 when tied: the device copy is not in the file)."""
        return self.output_bytes if self.output_in_file else 0

    output_in_file: bool = True


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
