"""Model catalog: data in catalog/*.yaml (one model a file), user additions in <config>/models/."""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployer.core.data_source import DataSource, data_source
from deployer.core.datafiles import (
    Id,
    Line,
    Prose,
    RepoFile,
    RepoId,
    Token,
    Url,
    parse_by_id,
)
from deployer.core.errors import ModelNotFound, QuantNotFound
from deployer.core.model.facts import ModelArch

# Bounds far above any published model and far below what would overflow or hang the fit
# (which multiplies layers x context x heads x head size); infinity and NaN are refused.
MAX_FILE_BYTES = 64 << 40  # 64 TiB
MAX_PARAMS_B = 100_000.0
MAX_LAYERS = 1024
MAX_HEADS = 1024
MAX_WIDTH = 1 << 18  # n_embd, n_ff per expert
MAX_VOCAB = 1 << 22
MAX_CTX = 1 << 24
MAX_EXPERTS = 1024
MAX_SPLIT_PARTS = 1000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class License(_Strict):
    """Licence facts a deployer must tell its user."""

    id: Token = Field(description="SPDX id or the licence's own short name, e.g. llama3.1")
    url: Url
    gated: bool = Field(description="the Hub repo asks users to accept terms first")
    restricts_use: bool = Field(description="use restrictions beyond attribution (needs consent)")
    commercial_use: Prose = Field(description="one plain sentence on commercial use")


class CatalogArch(_Strict):
    """Architecture as published; scalar shorthands expand to per-layer lists."""

    architecture: Token
    n_layer: int = Field(ge=1, le=MAX_LAYERS)
    n_embd: int = Field(ge=1, le=MAX_WIDTH)
    n_head: int = Field(ge=1, le=MAX_HEADS)
    n_head_kv: int = Field(ge=1, le=MAX_HEADS)
    head_dim: int = Field(ge=1, le=4096)
    n_ff: int = Field(default=0, ge=0, le=MAX_WIDTH)
    n_vocab: int = Field(ge=1, le=MAX_VOCAB)
    n_merges: int = Field(
        default=0, ge=0, le=4 * MAX_VOCAB, description="BPE merges of the published tokenizer"
    )
    ctx_train: int = Field(ge=1, le=MAX_CTX)
    sliding_window: int = Field(default=0, ge=0, le=MAX_CTX)
    swa_pattern: Literal["none", "alternating_even", "alternating_odd", "5_local_1_global"] = "none"
    n_expert: int = Field(default=0, ge=0, le=MAX_EXPERTS)
    n_expert_used: int = Field(default=0, ge=0, le=MAX_EXPERTS)
    tied_embeddings: bool = False
    kv_lora_rank: int = Field(default=0, ge=0, le=MAX_WIDTH)
    n_rot: int = Field(default=0, ge=0, le=4096)

    @model_validator(mode="after")
    def _check(self) -> CatalogArch:
        if self.n_head % self.n_head_kv:
            raise ValueError("n_head must be a multiple of n_head_kv")
        if self.n_expert_used > self.n_expert or (self.n_expert > 0) != (self.n_expert_used > 0):
            raise ValueError("n_expert_used must be between 1 and n_expert (both 0 for dense)")
        if (self.sliding_window > 0) != (self.swa_pattern != "none"):
            raise ValueError("sliding_window and swa_pattern go together (both set or neither)")
        return self

    def to_arch(self) -> ModelArch:
        """Expand into the per-layer form the fit uses."""
        n = self.n_layer
        if self.swa_pattern == "alternating_even":
            swa = [i % 2 == 0 for i in range(n)]
        elif self.swa_pattern == "alternating_odd":
            swa = [i % 2 == 1 for i in range(n)]
        elif self.swa_pattern == "5_local_1_global":
            swa = [(i + 1) % 6 != 0 for i in range(n)]
        else:
            swa = []
        # An MLA entry caches its latent and rope part as one K head, as an MLA file states it.
        mla = self.kv_lora_rank > 0
        return ModelArch(
            architecture=self.architecture,
            n_layer=n,
            n_embd=self.n_embd,
            n_head=self.n_head,
            n_head_kv=[1 if mla else self.n_head_kv] * n,
            head_dim_k=self.kv_lora_rank + self.n_rot if mla else self.head_dim,
            head_dim_v=self.kv_lora_rank if mla else self.head_dim,
            n_ff=self.n_ff,
            n_vocab=self.n_vocab,
            n_merges=self.n_merges,
            ctx_train=self.ctx_train,
            sliding_window=self.sliding_window if swa else 0,
            swa_layers=swa,
            n_expert=self.n_expert,
            n_expert_used=self.n_expert_used,
            tied_embeddings=self.tied_embeddings,
            kv_lora_rank=self.kv_lora_rank,
            n_rot=self.n_rot,
            mla=mla,
        )


class QuantFile(_Strict):
    """One quantization of a model on the Hub."""

    repo: RepoId = Field(description="Hub repo id, ORG/NAME")
    file: RepoFile = Field(description="file name, or the first part of a split set")
    bytes: int = Field(
        ge=1, le=MAX_FILE_BYTES, description="size of the file (split set: all parts together)"
    )
    split_parts: int = Field(default=1, ge=1, le=MAX_SPLIT_PARTS)
    size_source: Prose = Field(
        default="Hub file listing", description="exact LFS size, or a listing rounded to 0.01 GB"
    )


class CatalogModel(_Strict):
    """One model family member, with its quants."""

    id: Id
    name: Line
    family: Id
    params_b: float = Field(gt=0, le=MAX_PARAMS_B, description="parameters, billions")
    hf_base_model: RepoId
    license: License
    arch: CatalogArch
    quants: dict[Token, QuantFile] = Field(max_length=256)
    default_quant: Token = "Q4_K_M"
    notes: Prose = ""
    source: Prose = Field(description="where the architecture and sizes come from")

    @model_validator(mode="after")
    def _check(self) -> CatalogModel:
        if not self.quants:
            raise ValueError("a model needs at least one quant")
        if self.default_quant not in self.quants:
            raise ValueError(f"default_quant {self.default_quant} is not one of its quants")
        return self


def load_catalog(source: DataSource | None = None) -> dict[str, CatalogModel]:
    """All catalog models: shipped, then the user's (same id overrides); from the installed
    DataSource unless handed one."""
    texts = (source if source is not None else data_source()).yaml_texts("catalog")
    return parse_by_id(texts, CatalogModel)


def get_model(name: str, catalog: dict[str, CatalogModel] | None = None) -> CatalogModel:
    """A catalog model by id (case-insensitive), or ModelNotFound with the closest ids."""
    table = catalog if catalog is not None else load_catalog()
    key = name.lower()
    if key in table:
        return table[key]
    close = difflib.get_close_matches(key, list(table), n=3, cutoff=0.5)
    raise ModelNotFound(name, close)


def get_quant(model: CatalogModel, quant: str) -> tuple[str, QuantFile]:
    """The model's file for `quant` (case-insensitive), or QuantNotFound."""
    for label, qf in model.quants.items():
        if label.lower() == quant.lower():
            return label, qf
    close = difflib.get_close_matches(quant.upper(), list(model.quants), n=3, cutoff=0.5)
    raise QuantNotFound(quant, close, model.id)
