"""LoRA adapter GGUFs written with the `gguf` package's writer, shaped for the demo model.

The demo is Gemma 3 270M: 18 blocks, embedding 640, 4 query heads and 1 KV head of width 256,
so attn_q maps 640 -> 1024 and attn_k/attn_v 640 -> 256. Tensors are named and shaped as
llama.cpp's convert_lora_to_gguf.py writes them: `blk.N.attn_q.weight.lora_a` is (rank, n_in)
in numpy order (ggml ne0 = n_in, ne1 = rank) and `.lora_b` is (n_out, rank).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

DEMO_ARCH = "gemma3"
DEMO_EMBD = 640
DEMO_LAYERS = 18
# base tensor -> output width, for the demo's shapes
DEMO_OUT = {"attn_q": 1024, "attn_k": 256, "attn_v": 256}


def write_adapter(
    path: Path,
    *,
    arch: str = DEMO_ARCH,
    n_embd: int = DEMO_EMBD,
    layers: Iterable[int] = range(DEMO_LAYERS),
    targets: Iterable[str] = ("attn_q", "attn_v"),
    rank: int = 4,
    alpha: float | None = 4.0,
    std: float = 0.5,
    seed: int = 0,
    general_type: str = "adapter",
    adapter_type: str = "lora",
    block_count: int | None = None,
    dtype: type = np.float32,
    extra: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]] | None = None,
) -> Path:
    """Write a LoRA adapter GGUF with random A/B (normal, `std`) and return its path.

    `extra` adds pairs by name: base tensor name -> (A shape, B shape) in numpy order."""
    import gguf

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string("general.type", general_type)
    writer.add_string("adapter.type", adapter_type)
    if alpha is not None:
        writer.add_float32("adapter.lora.alpha", alpha)
    if block_count is not None:
        writer.add_uint32(f"{arch}.block_count", block_count)
    pairs: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    for i in layers:
        for t in targets:
            pairs[f"blk.{i}.{t}.weight"] = ((rank, n_embd), (DEMO_OUT.get(t, n_embd), rank))
    pairs.update(extra or {})
    for name, (a_shape, b_shape) in pairs.items():
        writer.add_tensor(f"{name}.lora_a", rng.normal(0, std, a_shape).astype(dtype))
        writer.add_tensor(f"{name}.lora_b", rng.normal(0, std, b_shape).astype(dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def pair_bytes(rank: int, n_in: int, n_out: int, item_bytes: int = 4) -> int:
    """Bytes llama.cpp allocates for one A/B pair (each tensor aligned to 32 bytes)."""

    def aligned(n: int) -> int:
        return -(-n // 32) * 32

    return aligned(rank * n_in * item_bytes) + aligned(n_out * rank * item_bytes)
