"""Quant quality ranking: which quantization loses least, from llama.cpp's published numbers."""

from __future__ import annotations

# Best to worst at similar use (llama.cpp tools/quantize; ../shared/reference/gguf_catalog.json).
QUALITY_ORDER: tuple[str, ...] = (
    "F32",
    "F16",
    "BF16",
    "Q8_0",
    "MXFP4",
    "Q6_K",
    "Q5_K_M",
    "Q5_K_S",
    "Q5_1",
    "Q5_0",
    "Q4_K_M",
    "IQ4_NL",
    "IQ4_XS",
    "Q4_K_S",
    "Q4_1",
    "Q4_0",
    "Q3_K_L",
    "IQ3_M",
    "Q3_K_M",
    "IQ3_S",
    "IQ3_XS",
    "IQ3_XXS",
    "Q3_K_S",
    "IQ2_M",
    "Q2_K",
    "Q2_K_S",
    "IQ2_S",
    "IQ2_XS",
    "IQ2_XXS",
    "IQ1_M",
    "IQ1_S",
)
# Perplexity increase over F16 on Llama-3-8B (llama-quantize's reference table).
PPL_DELTA: dict[str, float] = {
    "Q8_0": 0.0026,
    "Q6_K": 0.0217,
    "Q5_K_M": 0.0569,
    "Q5_K_S": 0.1049,
    "Q4_K_M": 0.1754,
    "Q4_K_S": 0.2689,
    "Q4_0": 0.4685,
    "Q3_K_L": 0.5562,
    "Q3_K_M": 0.6569,
    "Q3_K_S": 1.6321,
    "Q2_K": 3.5199,
}
# Unquantized types: Q8_0 is within noise of them at half the bytes, so they are not picked
# by default (and never on a CPU, where decode speed is bytes per token).
UNQUANTIZED = frozenset({"F32", "F16", "BF16"})


# Below this perplexity difference two quants are indistinguishable in use (F16 vs Q8_0 vs
# Q6_K differ by about 0.02 on Llama-3-8B); the smaller, faster file is then preferred.
NEGLIGIBLE_PPL_DELTA = 0.025


def ppl_delta(quant: str) -> float | None:
    """Measured perplexity increase over F16, 0 for unquantized, None when unknown."""
    key = quant.upper()
    if key in UNQUANTIZED:
        return 0.0
    return PPL_DELTA.get(key)


def quality_rank(quant: str) -> int:
    """Position in QUALITY_ORDER (0 is best); unknown labels rank last."""
    key = quant.upper()
    return QUALITY_ORDER.index(key) if key in QUALITY_ORDER else len(QUALITY_ORDER)


def quality_note(quant: str) -> str:
    """Short quality remark for a quant label."""
    key = quant.upper()
    if key in UNQUANTIZED:
        return "unquantized"
    if key == "MXFP4":
        return "native MXFP4 weights (as released)"
    if key in PPL_DELTA:
        return f"+{PPL_DELTA[key]:.4f} perplexity vs F16 (Llama-3-8B)"
    return "quality not measured in the reference table"
