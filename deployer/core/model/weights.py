"""Estimate a model's weight layout from catalog facts when no GGUF header has been read.

The file size is exact (from the Hub listing); its split into embeddings, output and blocks is
estimated from the architecture and the quant's bits per weight. The GGUF header, once read,
replaces this with the exact tensor table (deployer/core/model/gguf_meta.py).
"""

from __future__ import annotations

from deployer.core.model.catalog import CatalogModel, get_quant
from deployer.core.model.facts import ModelFacts, WeightLayout

# Bits per weight of the dominant block type of each file-type label (ggml type size/block size).
_BASE_BPW: dict[str, float] = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.5625,
    "Q5_K_M": 5.5,
    "Q5_K_S": 5.5,
    "Q5_0": 5.5,
    "Q5_1": 6.0,
    "Q4_K_M": 4.5,
    "Q4_K_S": 4.5,
    "Q4_0": 4.5,
    "Q4_1": 5.0,
    "IQ4_NL": 4.5,
    "IQ4_XS": 4.25,
    "MXFP4": 4.25,
    "Q3_K_L": 3.4375,
    "Q3_K_M": 3.4375,
    "Q3_K_S": 3.4375,
    "IQ3_M": 3.66,
    "IQ3_XS": 3.3,
    "IQ3_XXS": 3.0625,
    "Q2_K": 2.625,
    "Q2_K_S": 2.625,
    "IQ2_M": 2.7,
    "IQ2_S": 2.5,
    "IQ2_XS": 2.3125,
    "IQ2_XXS": 2.0625,
    "IQ1_M": 1.75,
    "IQ1_S": 1.5625,
}
_Q6_K_BPW = 6.5625
# Header: tokenizer strings, scores, types and merges dominate; ~50 B per vocab entry.
_HEADER_BYTES_PER_TOKEN = 50


def base_bpw(quant: str) -> float:
    """Bits per weight of a quant label's main tensor type (4.5 when unknown)."""
    key = quant.upper().split()[0].split("_XL")[0].replace("UD-", "")
    return _BASE_BPW.get(key, 4.5)


def _output_bpw(quant: str) -> float:
    # llama-quantize keeps output.weight at Q6_K for every K/legacy/IQ mix below Q8_0.
    bpw = base_bpw(quant)
    return bpw if bpw >= 8 else _Q6_K_BPW


def facts_from_catalog(model: CatalogModel, quant: str) -> ModelFacts:
    """ModelFacts for a catalog model's quant, with an estimated (not exact) tensor split."""
    label, qf = get_quant(model, quant)
    arch = model.arch.to_arch()
    embd_params = arch.n_vocab * arch.n_embd
    token_embd = int(embd_params * base_bpw(label) / 8)
    if arch.tied_embeddings:
        # The output matmul reuses token_embd; an offloaded output layer needs a device copy.
        output, in_file = token_embd, False
    else:
        output, in_file = int(embd_params * _output_bpw(label) / 8), True
    header = arch.n_vocab * _HEADER_BYTES_PER_TOKEN
    blocks_total = max(qf.bytes - header - token_embd - (output if in_file else 0), 0)
    per_block = blocks_total // arch.n_layer
    layout = WeightLayout(
        file_bytes=qf.bytes,
        token_embd_bytes=token_embd,
        output_bytes=output,
        output_in_file=in_file,
        block_bytes=[per_block] * arch.n_layer,
        cpu_repack_bytes=[],
        exact=False,
    )
    return ModelFacts(
        name=model.id, quant=label, arch=arch, weights=layout, source=f"catalog:{model.id}"
    )
