"""Test support: real GGUF headers as bytes, located field by field, and edited.

The walker here is the tests' own (independent of deployer's parser) and only ever reads
known-good headers: the demo model's, and real-shaped ones written by gguf.GGUFWriter. Edits
are made on the header bytes; the tensor data become a hole (a sparse file), so a 253 MB model
costs only its 6.5 MB header on disk.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter
from gguf.quants import quant_shape_to_byte_shape

ALIGNMENT = 32
# GGUF value types (gguf.h enum gguf_type).
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY = range(10)
UINT64, INT64, FLOAT64 = 10, 11, 12
FORMATS = {
    UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i",
    FLOAT32: "<f", BOOL: "<?", UINT64: "<Q", INT64: "<q", FLOAT64: "<d",
}  # fmt: skip
INT_RANGES = {
    UINT8: (0, 2**8 - 1), INT8: (-(2**7), 2**7 - 1), UINT16: (0, 2**16 - 1),
    INT16: (-(2**15), 2**15 - 1), UINT32: (0, 2**32 - 1), INT32: (-(2**31), 2**31 - 1),
    UINT64: (0, 2**64 - 1), INT64: (-(2**63), 2**63 - 1),
}  # fmt: skip


def pad(n: int, multiple: int = ALIGNMENT) -> int:
    return (n + multiple - 1) // multiple * multiple


@dataclass
class KVSpan:
    """Where one key/value sits: record start, value type, value start, record end."""

    key: str
    start: int
    type_pos: int
    value_pos: int
    end: int
    vtype: int
    item_type: int | None = None
    count: int = 1


@dataclass
class TensorSpan:
    """Where one tensor-table entry sits, field by field."""

    name: str
    start: int
    ndims_pos: int
    dims_pos: int
    n_dims: int
    type_pos: int
    offset_pos: int
    end: int
    ggml_type: int
    dims: tuple[int, ...]
    offset: int


@dataclass(repr=False)
class Header:
    """A known-good header: its bytes up to the end of the tensor table, and the data size."""

    name: str
    core: bytes  # magic .. end of the tensor table (no padding)
    data_bytes: int  # from the start of the data section to the end of the last tensor
    kv: dict[str, KVSpan] = field(default_factory=dict)
    tensors: list[TensorSpan] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Header({self.name}, {len(self.core)} header bytes)"

    @property
    def n_layer(self) -> int:
        span = next(s for k, s in self.kv.items() if k.endswith(".block_count"))
        return int(struct.unpack_from("<I", self.core, span.value_pos)[0])

    @property
    def file_bytes(self) -> int:
        return pad(len(self.core)) + self.data_bytes


def _skip_value(buf: bytes, pos: int, vtype: int) -> tuple[int, int | None, int]:
    if vtype in FORMATS:
        return pos + struct.calcsize(FORMATS[vtype]), None, 1
    if vtype == STRING:
        (n,) = struct.unpack_from("<Q", buf, pos)
        return pos + 8 + n, None, n
    assert vtype == ARRAY
    itype, count = struct.unpack_from("<iQ", buf, pos)
    pos += 12
    if itype == STRING:
        for _ in range(count):
            (n,) = struct.unpack_from("<Q", buf, pos)
            pos += 8 + n
    else:
        pos += count * struct.calcsize(FORMATS[itype])
    return pos, itype, count


def tensor_nbytes(ggml_type: int, dims: Sequence[int]) -> int:
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    return int(np.prod(dims, dtype=object)) // block * size


def walk(name: str, buf: bytes) -> Header:
    """Locate every field of a known-good header (buf holds at least the whole header)."""
    assert buf[:4] == b"GGUF"
    n_tensors, n_kv = struct.unpack_from("<qq", buf, 8)
    pos = 24
    kvs: dict[str, KVSpan] = {}
    for _ in range(n_kv):
        start = pos
        (klen,) = struct.unpack_from("<Q", buf, pos)
        key = buf[pos + 8 : pos + 8 + klen].decode()
        pos += 8 + klen
        (vtype,) = struct.unpack_from("<i", buf, pos)
        end, itype, count = _skip_value(buf, pos + 4, vtype)
        kvs[key] = KVSpan(key, start, pos, pos + 4, end, vtype, itype, count)
        pos = end
    tensors: list[TensorSpan] = []
    for _ in range(n_tensors):
        start = pos
        (nlen,) = struct.unpack_from("<Q", buf, pos)
        tname = buf[pos + 8 : pos + 8 + nlen].decode()
        pos += 8 + nlen
        (n_dims,) = struct.unpack_from("<I", buf, pos)
        dims = tuple(struct.unpack_from(f"<{n_dims}q", buf, pos + 4))
        type_pos = pos + 4 + 8 * n_dims
        ggml_type, offset = struct.unpack_from("<iQ", buf, type_pos)
        end = type_pos + 12
        span = TensorSpan(
            tname, start, pos, pos + 4, n_dims, type_pos, type_pos + 4, end, ggml_type, dims, offset
        )
        tensors.append(span)
        pos = end
    last = tensors[-1]
    data = last.offset + tensor_nbytes(last.ggml_type, last.dims)
    return Header(name, bytes(buf[:pos]), data, kvs, tensors)


def write_sparse(path: Path, core: bytes, data_bytes: int, size: int | None = None) -> Path:
    """A GGUF of `core` (padded) then `data_bytes` of holes, cut to `size` when given."""
    with path.open("wb") as fh:
        fh.write(core)
        fh.write(b"\0" * (pad(len(core)) - len(core)))
    os.truncate(path, pad(len(core)) + data_bytes if size is None else size)
    return path


# --- encoding values --------------------------------------------------------------------------


def enc_string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def enc_value(vtype: int, value: Any, item_type: int | None = None) -> bytes:
    """Bytes of a value of `vtype` (an ARRAY takes a list and its item type)."""
    if vtype in FORMATS:
        return struct.pack(FORMATS[vtype], value)
    if vtype == STRING:
        return enc_string(value)
    assert vtype == ARRAY and item_type is not None
    body = b"".join(enc_value(item_type, v) for v in value)
    return struct.pack("<iQ", item_type, len(value)) + body


def enc_kv(key: str, vtype: int, value: Any, item_type: int | None = None) -> bytes:
    return enc_string(key) + struct.pack("<i", vtype) + enc_value(vtype, value, item_type)


def replace_kv(h: Header, key: str, record: bytes) -> bytes:
    """The header with one key/value record replaced (the tensor offsets are relative)."""
    span = h.kv[key]
    return h.core[: span.start] + record + h.core[span.end :]


def add_kv(h: Header, record: bytes) -> bytes:
    """The header with one more key/value record (after the last one)."""
    end = max(s.end for s in h.kv.values())
    n_kv = len(h.kv) + 1
    core = h.core[:16] + struct.pack("<q", n_kv) + h.core[24:end] + record + h.core[end:]
    return core


def put(core: bytes, pos: int, fmt: str, value: Any) -> bytes:
    """`core` with one packed value overwritten in place."""
    raw = struct.pack(fmt, value)
    return core[:pos] + raw + core[pos + len(raw) :]


# --- real-shaped headers ----------------------------------------------------------------------


TensorDef = tuple[str, str, tuple[int, ...]]  # name, ggml type, ggml shape (ne0 first)


def write_header(path: Path, arch: str, keys: dict[str, Any], tensors: list[TensorDef]) -> Header:
    """A header as llama.cpp's converters write it (typed keys, tensor table, no data)."""
    writer = GGUFWriter(path, arch)
    for key, value in keys.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, value)
    for name, type_name, shape in tensors:
        qtype = GGMLQuantizationType[type_name]
        np_shape = tuple(reversed(shape))
        if qtype == GGMLQuantizationType.F32:
            nbytes = int(np.prod(np_shape)) * 4
            writer.add_tensor_info(name, np_shape, np.dtype(np.float32), nbytes)
        else:
            byte_shape = quant_shape_to_byte_shape(np_shape, qtype)
            nbytes = int(np.prod(byte_shape))
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    return walk(arch, path.read_bytes())


VOCAB = 32000  # real-sized for Llama 2 / Mistral; the others keep their shapes, not their vocab


def _tokenizer() -> dict[str, Any]:
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": [f"<t{i}>" for i in range(VOCAB)],
        "tokenizer.ggml.scores": [0.0] * VOCAB,
        "tokenizer.ggml.token_type": [1] * VOCAB,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}",
        "general.file_type": 15,
        "general.quantization_version": 2,
    }


def _dense_block(
    il: int, embd: int, q: int, kv: int, ff: int, qt: str, bias: bool
) -> list[TensorDef]:
    p = f"blk.{il}."
    out: list[TensorDef] = [
        (p + "attn_norm.weight", "F32", (embd,)),
        (p + "attn_q.weight", qt, (embd, q)),
        (p + "attn_k.weight", qt, (embd, kv)),
        (p + "attn_v.weight", "Q6_K" if qt == "Q4_K" else qt, (embd, kv)),
        (p + "attn_output.weight", qt, (q, embd)),
        (p + "ffn_norm.weight", "F32", (embd,)),
        (p + "ffn_gate.weight", qt, (embd, ff)),
        (p + "ffn_up.weight", qt, (embd, ff)),
        (p + "ffn_down.weight", "Q6_K" if qt == "Q4_K" else qt, (ff, embd)),
    ]
    if bias:
        out += [(p + f"attn_{w}.bias", "F32", (n,)) for w, n in (("q", q), ("k", kv), ("v", kv))]
    return out


def llama_header(path: Path) -> Header:
    """Llama-2-7B's shape: 32 blocks of 4096, 32 heads, MHA, Q4_K_M-style types."""
    n, embd, ff = 32, 4096, 11008
    keys = {
        "llama.context_length": 4096,
        "llama.embedding_length": embd,
        "llama.block_count": n,
        "llama.feed_forward_length": ff,
        "llama.rope.dimension_count": 128,
        "llama.attention.head_count": 32,
        "llama.attention.head_count_kv": 32,
        "llama.attention.layer_norm_rms_epsilon": 1e-5,
        "llama.rope.freq_base": 10000.0,
        "general.name": "Llama 2 7B (shape)",
        **_tokenizer(),
    }
    tensors: list[TensorDef] = [("token_embd.weight", "Q4_K", (embd, VOCAB))]
    for il in range(n):
        tensors += _dense_block(il, embd, embd, embd, ff, "Q4_K", False)
    tensors += [("output_norm.weight", "F32", (embd,)), ("output.weight", "Q6_K", (embd, VOCAB))]
    return write_header(path, "llama", keys, tensors)


def qwen2_header(path: Path) -> Header:
    """Qwen2.5-0.5B's shape: 24 blocks of 896, 14 heads over 2 KV heads, q/k/v biases, tied."""
    n, embd, ff = 24, 896, 4864
    keys = {
        "qwen2.context_length": 32768,
        "qwen2.embedding_length": embd,
        "qwen2.block_count": n,
        "qwen2.feed_forward_length": ff,
        "qwen2.attention.head_count": 14,
        "qwen2.attention.head_count_kv": 2,
        "qwen2.attention.layer_norm_rms_epsilon": 1e-6,
        "qwen2.rope.freq_base": 1000000.0,
        "general.name": "Qwen2.5 0.5B (shape)",
        **_tokenizer(),
    }
    tensors: list[TensorDef] = [("token_embd.weight", "Q8_0", (embd, VOCAB))]
    for il in range(n):
        tensors += _dense_block(il, embd, embd, 128, ff, "Q8_0", True)
    tensors += [("output_norm.weight", "F32", (embd,))]
    return write_header(path, "qwen2", keys, tensors)


def qwen3moe_header(path: Path) -> Header:
    """Qwen3-30B-A3B's shape: 48 blocks of 2048, 128 experts (8 used) stacked 3-D."""
    n, embd, eff, n_exp = 48, 2048, 768, 128
    keys = {
        "qwen3moe.context_length": 40960,
        "qwen3moe.embedding_length": embd,
        "qwen3moe.block_count": n,
        "qwen3moe.feed_forward_length": 6144,
        "qwen3moe.expert_feed_forward_length": eff,
        "qwen3moe.expert_count": n_exp,
        "qwen3moe.expert_used_count": 8,
        "qwen3moe.attention.head_count": 32,
        "qwen3moe.attention.head_count_kv": 4,
        "qwen3moe.attention.key_length": 128,
        "qwen3moe.attention.value_length": 128,
        "qwen3moe.attention.layer_norm_rms_epsilon": 1e-6,
        "qwen3moe.rope.freq_base": 1000000.0,
        "general.name": "Qwen3 30B A3B (shape)",
        **_tokenizer(),
    }
    tensors: list[TensorDef] = [("token_embd.weight", "Q4_K", (embd, VOCAB))]
    for il in range(n):
        p = f"blk.{il}."
        tensors += [
            (p + "attn_norm.weight", "F32", (embd,)),
            (p + "attn_q.weight", "Q4_K", (embd, 4096)),
            (p + "attn_k.weight", "Q4_K", (embd, 512)),
            (p + "attn_v.weight", "Q6_K", (embd, 512)),
            (p + "attn_output.weight", "Q4_K", (4096, embd)),
            (p + "attn_q_norm.weight", "F32", (128,)),
            (p + "attn_k_norm.weight", "F32", (128,)),
            (p + "ffn_norm.weight", "F32", (embd,)),
            (p + "ffn_gate_inp.weight", "F32", (embd, n_exp)),
            (p + "ffn_gate_exps.weight", "Q4_K", (embd, eff, n_exp)),
            (p + "ffn_up_exps.weight", "Q4_K", (embd, eff, n_exp)),
            (p + "ffn_down_exps.weight", "Q6_K", (eff, embd, n_exp)),
        ]
    tensors += [("output_norm.weight", "F32", (embd,)), ("output.weight", "Q6_K", (embd, VOCAB))]
    return write_header(path, "qwen3moe", keys, tensors)


def demo_header(model: Path) -> Header:
    """The demo model's real header (its first bytes; the 250 MB of weights stay unread)."""
    with model.open("rb") as fh:
        buf = fh.read(8 << 20)
    h = walk("gemma3", buf)
    assert pad(len(h.core)) + h.data_bytes == model.stat().st_size
    return h
