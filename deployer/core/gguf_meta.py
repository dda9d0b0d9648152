"""Read ModelFacts from a GGUF header: architecture keys and the exact tensor table.

Only the header is touched (key/values and tensor infos); tensor data stay unread, so a sparse
file holding just the header bytes of a remote model reads the same as the full file.
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFReader, GGUFValueType, ReaderField

from deployer.core.arch import ModelArch, ModelFacts, WeightLayout
from deployer.core.errors import GGUFReadError

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
    38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0",
}  # fmt: skip
_FTYPE_GUESSED = 1024

# llama.cpp's built-in SWA period per architecture when the file sets a window but no pattern
# (src/llama-model.cpp: set_swa_pattern(N) makes layer il SWA when il % N < N - 1).
_DEFAULT_SWA_PERIOD: dict[str, int] = {"gemma2": 2, "gpt-oss": 2, "gemma3": 6, "cohere2": 4}

_BLOCK_RE = re.compile(r"^blk\.(\d+)\.")
# String arrays longer than this are skipped over, not split into one numpy view per string.
_SMALL_STRING_ARRAY = 256


@dataclass(frozen=True)
class TensorInfo:
    """One tensor-table entry: what the layout needs, without the reader's memory map."""

    name: str
    ggml_type: str
    shape: tuple[int, ...]
    n_bytes: int


class _HeaderReader(GGUFReader):
    """GGUFReader that reads big arrays in one step.

    The stock reader builds one numpy view per array element: 10 s for a 262k-token
    vocabulary. Numeric arrays become one view (contents() still works); long string arrays
    keep only their count and raw bytes (contents() is not used on them).
    """

    def _get_field_parts(
        self, orig_offs: int, raw_type: int
    ) -> tuple[int, list[np.ndarray[Any, Any]], list[int], list[GGUFValueType]]:
        if GGUFValueType(raw_type) != GGUFValueType.ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        raw_itype = self._get(orig_offs, np.uint32)
        count_arr = self._get(orig_offs + 4, np.uint64)
        if len(raw_itype) != 1 or len(count_arr) != 1:
            raise ValueError("array header past the end of the file")
        itype, count = GGUFValueType(int(raw_itype[0])), int(count_arr[0])
        offs = orig_offs + 12
        np_type = self.gguf_scalar_to_np.get(itype)
        if np_type is not None:
            values = self._get(offs, np_type, count)
            if len(values) != count:
                raise ValueError("array past the end of the file")
            size = 12 + int(values.nbytes)
            return size, [raw_itype, count_arr, values], [2], [GGUFValueType.ARRAY, itype]
        if itype == GGUFValueType.STRING and count > _SMALL_STRING_ARRAY:
            end = self._skip_strings(offs, count)
            payload = self.data[offs:end]
            return (
                end - orig_offs,
                [raw_itype, count_arr, payload],
                [],
                [GGUFValueType.ARRAY, itype],
            )
        return super()._get_field_parts(orig_offs, raw_type)

    def _skip_strings(self, offs: int, count: int) -> int:
        swapped = self.byte_order == "S"
        little = (np.little_endian and not swapped) or (not np.little_endian and swapped)
        length = struct.Struct("<Q" if little else ">Q")
        buf = memoryview(self.data)  # type: ignore[arg-type]
        for _ in range(count):
            offs += 8 + length.unpack_from(buf, offs)[0]
        if offs > len(buf):
            raise ValueError("string array past the end of the file")
        return offs


def _open(path: Path) -> GGUFReader:
    try:
        return _HeaderReader(path)
    except FileNotFoundError:
        raise GGUFReadError(str(path), "no such file") from None
    except (ValueError, IndexError, KeyError, OverflowError, TypeError, struct.error) as exc:
        raise GGUFReadError(str(path), f"not a GGUF file or truncated ({exc})") from exc
    except OSError as exc:
        raise GGUFReadError(str(path), str(exc)) from exc


def gguf_header_bytes(path: Path) -> int:
    """Offset of the tensor data: how many leading bytes hold the whole header."""
    return int(_open(path).data_offset)


def _scalar(field: ReaderField | None) -> Any:
    if field is None:
        return None
    if field.types and field.types[0] == GGUFValueType.ARRAY:
        return None
    return field.contents()


def _array_len(field: ReaderField) -> int:
    # KV field parts: key length, key bytes, value type, item type, item count, items...
    return int(field.parts[4][0])


class _Keys:
    """Typed access to `<arch>.*` keys, scalar or per-layer array."""

    def __init__(self, reader: GGUFReader, arch: str) -> None:
        self._reader, self._arch = reader, arch

    def field(self, key: str) -> ReaderField | None:
        return self._reader.get_field(f"{self._arch}.{key}")

    def get_int(self, key: str, default: int = 0) -> int:
        field = self.field(key)
        if field is None:
            return default
        if field.types and field.types[0] == GGUFValueType.ARRAY:
            values = [int(v) for v in field.contents()]
            return max(values) if values else default
        return int(field.contents())

    def per_layer(self, key: str, n_layer: int, default: int) -> list[int]:
        field = self.field(key)
        if field is None:
            return [default] * n_layer
        if field.types and field.types[0] == GGUFValueType.ARRAY:
            values = [int(v) for v in field.contents()]
            if len(values) != n_layer:
                raise ValueError(f"{self._arch}.{key} has {len(values)} entries, not {n_layer}")
            return values
        return [int(field.contents())] * n_layer


def _swa_layers(keys: _Keys, arch: str, n_layer: int, window: int) -> list[bool]:
    if window <= 0:
        return []
    field = keys.field("attention.sliding_window_pattern")
    if field is not None and field.types[0] == GGUFValueType.ARRAY:
        values = [bool(v) for v in field.contents()]
        if len(values) != n_layer:
            raise ValueError(f"sliding_window_pattern has {len(values)} entries, not {n_layer}")
        return values
    period = int(field.contents()) if field is not None else _DEFAULT_SWA_PERIOD.get(arch)
    if period is None:
        return [True] * n_layer  # a window with no pattern: every layer slides
    return [period == 0 or il % period < period - 1 for il in range(n_layer)]


def _recurrent_state_bytes(keys: _Keys, n_head_kv: list[int]) -> int:
    d_conv = keys.get_int("ssm.conv_kernel")
    d_inner = keys.get_int("ssm.inner_size")
    d_state = keys.get_int("ssm.state_size")
    if not (d_conv or d_inner or d_state):
        return 0
    n_group = keys.get_int("ssm.group_count")
    per_layer = (max(d_conv - 1, 0) * (d_inner + 2 * n_group * d_state) + d_state * d_inner) * 4
    # Hybrids mark their recurrent layers with 0 KV heads; otherwise every layer has a state.
    n_recurrent = sum(1 for kv in n_head_kv if kv == 0) or len(n_head_kv)
    return per_layer * n_recurrent


def _arch_from_reader(reader: GGUFReader, tensors: dict[str, TensorInfo]) -> ModelArch:
    arch = _scalar(reader.get_field("general.architecture"))
    if not isinstance(arch, str) or not arch:
        raise ValueError("general.architecture is missing")
    keys = _Keys(reader, arch)
    n_layer = keys.get_int("block_count")
    n_embd = keys.get_int("embedding_length")
    recurrent = keys.field("ssm.conv_kernel") is not None
    n_head = keys.get_int("attention.head_count", 0 if recurrent else -1)
    if n_head < 0:
        raise ValueError(f"{arch}.attention.head_count is missing")
    n_head_kv = keys.per_layer("attention.head_count_kv", n_layer, 0 if recurrent else n_head)
    n_head = max(n_head, 1)  # pure SSMs have no attention heads
    n_ff = keys.get_int("expert_feed_forward_length") or keys.get_int("feed_forward_length")
    tokens = reader.get_field("tokenizer.ggml.tokens")
    n_vocab = _array_len(tokens) if tokens is not None else keys.get_int("vocab_size")
    if not n_vocab and "token_embd.weight" in tensors:
        n_vocab = tensors["token_embd.weight"].shape[-1]
    window = keys.get_int("attention.sliding_window")
    swa = _swa_layers(keys, arch, n_layer, window)
    kv_lora_rank = keys.get_int("attention.kv_lora_rank")
    return ModelArch(
        architecture=arch,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=keys.get_int("attention.key_length", n_embd // n_head),
        head_dim_v=keys.get_int("attention.value_length", n_embd // n_head),
        n_ff=n_ff,
        n_vocab=n_vocab,
        ctx_train=keys.get_int("context_length"),
        sliding_window=window if any(swa) else 0,
        swa_layers=swa if any(swa) else [],
        n_expert=keys.get_int("expert_count"),
        n_expert_used=keys.get_int("expert_used_count"),
        tied_embeddings="output.weight" not in tensors,
        kv_lora_rank=kv_lora_rank,
        n_rot=keys.get_int("rope.dimension_count") if kv_lora_rank else 0,
        recurrent_state_bytes_per_seq=_recurrent_state_bytes(keys, n_head_kv),
    )


def _tensors(reader: GGUFReader) -> list[TensorInfo]:
    return [
        TensorInfo(t.name, t.tensor_type.name, tuple(int(d) for d in t.shape), int(t.n_bytes))
        for t in reader.tensors
    ]


def _repacked(t: TensorInfo) -> bool:
    return (
        t.ggml_type in CPU_REPACK_TYPES
        and t.name.endswith(".weight")
        and len(t.shape) in (2, 3)  # 3-D: stacked MoE experts (MUL_MAT_ID) repack too
        and t.shape[1] % _REPACK_ROW_MULTIPLE == 0
    )


def layout_from_tensors(tensors: list[TensorInfo], n_layer: int, file_bytes: int) -> WeightLayout:
    """Exact WeightLayout from a tensor table (all parts of a split set together)."""
    blocks, repack = [0] * n_layer, [0] * n_layer
    token_embd = output = other = 0
    for t in tensors:
        match = _BLOCK_RE.match(t.name)
        if match:
            il = int(match.group(1))
            if il >= n_layer:
                raise ValueError(f"tensor {t.name} beyond block_count {n_layer}")
            blocks[il] += t.n_bytes
            repack[il] += t.n_bytes if _repacked(t) else 0
        elif t.name == "token_embd.weight":
            token_embd = t.n_bytes
        elif t.name == "output.weight":
            output = t.n_bytes
        else:
            other += t.n_bytes  # output_norm, rope factors...: placed with the output layer
    tied = not any(t.name == "output.weight" for t in tensors)
    return WeightLayout(
        file_bytes=file_bytes,
        token_embd_bytes=token_embd,
        # Tied: the output layer is a device copy of token_embd; the small rest stays counted.
        output_bytes=(token_embd if tied else output) + other,
        output_in_file=not tied,
        block_bytes=blocks,
        cpu_repack_bytes=repack,
        exact=True,
    )


def _quant_label(reader: GGUFReader, tensors: list[TensorInfo]) -> str:
    file_type = _scalar(reader.get_field("general.file_type"))
    if isinstance(file_type, int):
        label = LLAMA_FTYPE_LABELS.get(file_type & ~_FTYPE_GUESSED)
        if label:
            return label
    by_type: Counter[str] = Counter()
    for t in tensors:
        by_type[t.ggml_type] += t.n_bytes
    return by_type.most_common(1)[0][0] if by_type else "unknown"


def _check_fits(path: Path, reader: GGUFReader, size: int) -> None:
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if max(end, int(reader.data_offset)) > size:
        raise GGUFReadError(str(path), f"truncated: tensor data end at {end}, file has {size}")


def _read_part(path: Path) -> tuple[GGUFReader, list[TensorInfo]]:
    reader = _open(path)
    _check_fits(path, reader, path.stat().st_size)
    return reader, _tensors(reader)


def facts_from_gguf(
    path: Path,
    name: str | None = None,
    source: str | None = None,
    total_file_bytes: int | None = None,
) -> ModelFacts:
    """ModelFacts from one GGUF file's header (for a split set, see facts_from_gguf_parts)."""
    return facts_from_gguf_parts([path], name, source, total_file_bytes)


def facts_from_gguf_parts(
    paths: list[Path],
    name: str | None = None,
    source: str | None = None,
    total_file_bytes: int | None = None,
) -> ModelFacts:
    """ModelFacts from a split set: keys from the first part, tensor tables from all parts."""
    if not paths:
        raise ValueError("facts_from_gguf_parts needs at least one path")
    first, tensors = _read_part(paths[0])
    split_count = _scalar(first.get_field("split.count"))
    if len(paths) > 1 and split_count != len(paths):
        raise GGUFReadError(str(paths[0]), f"split.count is {split_count}, got {len(paths)} parts")
    for part in paths[1:]:
        tensors += _read_part(part)[1]
    try:
        arch = _arch_from_reader(first, {t.name: t for t in tensors})
        file_bytes = total_file_bytes or sum(p.stat().st_size for p in paths)
        layout = layout_from_tensors(tensors, arch.n_layer, file_bytes)
        quant = _quant_label(first, tensors)
    except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        raise GGUFReadError(str(paths[0]), f"unusable metadata: {exc}") from exc
    general_name = _scalar(first.get_field("general.name"))
    return ModelFacts(
        name=name or (general_name if isinstance(general_name, str) else paths[0].stem),
        quant=quant,
        arch=arch,
        weights=layout,
        source=source or str(paths[0]),
        has_chat_template=first.get_field("tokenizer.chat_template") is not None,
    )
