"""Read a GGUF header (key/values and tensor table) within the limits llama.cpp enforces.

A header is hostile until read: every count, length, type id, shape and offset is checked as it
is read, against the bytes really there and against what the pinned llama.cpp (build 11434)
accepts in ggml/src/gguf.cpp (gguf_init_from_file_impl), so a damaged or crafted file is
refused in one line before anything is sized by it. Reading allocates in proportion to the
bytes present, never to a declared count, and values are kept small: long strings and long
arrays keep only their length.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from deployer.core.untrusted import shown

# --- llama.cpp's own limits (ggml/src/gguf.cpp, ggml/include/ggml.h) -------------------------
GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)  # v1 is refused as unsupported, anything above 3 as too new
GGUF_DEFAULT_ALIGNMENT = 32
GGUF_MAX_ARRAY_ELEMENTS = 1 << 30
GGML_MAX_DIMS = 4
GGML_MAX_NAME = 64  # a tensor name must be shorter (it is copied into char name[64])
INT64_MAX = (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1

# --- deployer's own bounds: far above any real model, low enough to read in well under a second
# (llama.cpp leaves these to available memory; real models have < 200 keys and vocabularies up
# to ~262k strings). The one set of limits: gguf_extent's walk of a remote header uses them too.
MAX_KV = 4096
# The largest published GGUFs list about 2,000 tensors (Llama 3.1 405B: 1,138; DeepSeek-V3
# with merged experts: ~1,100); gguf's reader spends ~0.6 ms on each, so this bounds a hostile
# table to ~10 s.
MAX_TENSORS = 16384
MAX_KEY_BYTES = 1024
MAX_STRINGS = 1 << 23  # strings in arrays, over the whole header
SHORT_STRING_BYTES = 1024  # longer string values keep only their length
SMALL_ARRAY_ITEMS = 1024  # longer arrays keep only their item type and length

# GGUF value types (gguf.h enum gguf_type).
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY = range(10)
UINT64, INT64, FLOAT64 = 10, 11, 12
TYPE_NAMES = (
    "UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32", "BOOL", "STRING",
    "ARRAY", "UINT64", "INT64", "FLOAT64",
)  # fmt: skip
_SCALAR_FORMATS: dict[int, str] = {
    UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i",
    FLOAT32: "<f", BOOL: "<b", UINT64: "<Q", INT64: "<q", FLOAT64: "<d",
}  # fmt: skip
SCALAR_BYTES: dict[int, int] = {t: struct.calcsize(f) for t, f in _SCALAR_FORMATS.items()}
INT_TYPES = frozenset({UINT8, INT8, UINT16, INT16, UINT32, INT32, UINT64, INT64})

# ggml types a GGUF may hold: id -> (name, elements per block, bytes per block), from
# ggml/include/ggml.h enum ggml_type and ggml/src/ggml.c type_traits of the pinned build.
# Removed ids (4, 5, 31-33, 36-38) are refused, as llama.cpp refuses them (block size 0).
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18), 42: ("Q2_0", 64, 18),
}  # fmt: skip


class HeaderError(ValueError):
    """A GGUF header that llama.cpp would refuse, or that deployer will not read; one line."""


@dataclass(frozen=True)
class KeyValue:
    """One metadata value: scalars decoded; strings and arrays only when small."""

    type: int
    value: int | float | bool | str | None = None  # scalar, short string; None when long
    item_type: int | None = None  # arrays only
    count: int = 1  # arrays: items; strings: bytes
    items: tuple[int | float | bool, ...] | None = None  # small numeric arrays

    @property
    def type_name(self) -> str:
        """GGUF type as llama.cpp names it, ARRAY[ITEM] for arrays."""
        if self.type == ARRAY and self.item_type is not None:
            return f"ARRAY[{TYPE_NAMES[self.item_type]}]"
        return TYPE_NAMES[self.type]


@dataclass(frozen=True)
class TensorEntry:
    """One tensor-table entry, checked: known type, shape that divides into blocks, offset."""

    name: str
    ggml_type: str
    shape: tuple[int, ...]  # ggml order: ne0 (the row) first
    n_bytes: int
    offset: int  # from the start of the data section


@dataclass(frozen=True)
class GGUFHeader:
    """A GGUF file's header, every field within llama.cpp's limits."""

    version: int
    alignment: int
    kv: dict[str, KeyValue]
    tensors: list[TensorEntry]
    data_offset: int  # where tensor data start: the header's length, padded

    @property
    def needed_bytes(self) -> int:
        """Bytes the file must have: up to the end of the last tensor's data."""
        end = max((t.offset + t.n_bytes for t in self.tensors), default=0)
        return self.data_offset + end


class _Cursor:
    """Reads little-endian values from a buffer, refusing to read past its end."""

    def __init__(self, buf: memoryview) -> None:
        self.buf, self.pos, self.size = buf, 0, len(buf)

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise HeaderError(
                f"header is cut off in {what} at byte {self.pos} (the file has {self.size})"
            )

    def unpack(self, fmt: str, what: str) -> int | float:
        size = struct.calcsize(fmt)
        self.need(size, what)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value  # type: ignore[no-any-return]

    def u32(self, what: str) -> int:
        return int(self.unpack("<I", what))

    def i32(self, what: str) -> int:
        return int(self.unpack("<i", what))

    def u64(self, what: str) -> int:
        return int(self.unpack("<Q", what))

    def i64(self, what: str) -> int:
        return int(self.unpack("<q", what))

    def raw_string(self, what: str, max_bytes: int | None = None) -> tuple[int, bytes | None]:
        """A length-prefixed string: (length, bytes), bytes None when longer than max_bytes."""
        length = self.u64(f"the length of {what}")
        self.need(length, what)
        start, self.pos = self.pos, self.pos + length
        if max_bytes is not None and length > max_bytes:
            return length, None
        return length, bytes(self.buf[start : self.pos])

    def text(self, what: str, max_bytes: int) -> str:
        length, data = self.raw_string(what, max_bytes)
        if data is None:
            raise HeaderError(f"{what} is {length} bytes long (at most {max_bytes})")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise HeaderError(f"{what} is not UTF-8 text") from None


_U64 = struct.Struct("<Q")


def _skip_strings(cur: _Cursor, count: int, label: str) -> None:
    # The hot loop of a header (a 262k-token vocabulary): no per-item allocation.
    buf, pos, size, unpack = cur.buf, cur.pos, cur.size, _U64.unpack_from
    for i in range(count):
        if size - pos < 8:
            cur.pos = pos
            cur.need(8, f"string {i} of {label}")
        pos += 8 + unpack(buf, pos)[0]
        if pos > size:
            raise HeaderError(f"string {i} of {label} runs past the end of the file ({size} bytes)")
    cur.pos = pos


def _read_value(cur: _Cursor, vtype: int, label: str, strings_left: list[int]) -> KeyValue:
    if vtype in _SCALAR_FORMATS:
        value = cur.unpack(_SCALAR_FORMATS[vtype], f"the value of {label}")
        return KeyValue(vtype, bool(value) if vtype == BOOL else value)
    if vtype == STRING:
        length, data = cur.raw_string(f"the value of {label}", SHORT_STRING_BYTES)
        text = None if data is None else data.decode("utf-8", errors="replace")
        return KeyValue(STRING, text, count=length)
    if vtype != ARRAY:
        raise HeaderError(f"{label} has an unknown value type {vtype}")
    itype = cur.i32(f"the item type of {label}")
    count = cur.u64(f"the length of {label}")
    if itype == ARRAY or not (itype in _SCALAR_FORMATS or itype == STRING):
        raise HeaderError(f"{label} is an array of unknown or nested type {itype}")
    if count > GGUF_MAX_ARRAY_ELEMENTS:
        raise HeaderError(f"{label} has {count} items, above llama.cpp's limit of 2^30")
    if itype == STRING:
        if count > strings_left[0]:
            raise HeaderError(f"{label} has {count} strings; deployer reads at most {MAX_STRINGS}")
        strings_left[0] -= count
        cur.need(8 * count, f"the strings of {label}")  # every string has an 8-byte length
        _skip_strings(cur, count, label)
        return KeyValue(ARRAY, item_type=STRING, count=count)
    fmt = _SCALAR_FORMATS[itype]
    size = struct.calcsize(fmt)
    cur.need(count * size, f"the items of {label}")
    items = None
    if count <= SMALL_ARRAY_ITEMS:
        items = tuple(
            v for (v,) in struct.iter_unpack(fmt, cur.buf[cur.pos : cur.pos + count * size])
        )
        if itype == BOOL:
            items = tuple(bool(v) for v in items)
    cur.pos += count * size
    return KeyValue(ARRAY, item_type=itype, count=count, items=items)


def _read_kv(cur: _Cursor, n_kv: int) -> dict[str, KeyValue]:
    kv: dict[str, KeyValue] = {}
    strings_left = [MAX_STRINGS]
    for i in range(n_kv):
        key = cur.text(f"key {i}", MAX_KEY_BYTES)
        if not key:
            raise HeaderError(f"key {i} is empty")
        label = shown(key)  # keys and names go into one-line messages: escaped, bounded
        if key in kv:
            raise HeaderError(f"key {label} appears twice")
        vtype = cur.i32(f"the type of {label}")
        kv[key] = _read_value(cur, vtype, label, strings_left)
    return kv


def _tensor_bytes(label: str, type_id: int, dims: list[int]) -> tuple[str, int]:
    if type_id not in GGML_TYPES:
        raise HeaderError(f"tensor {label} has unknown ggml type {type_id}")
    type_name, block, type_size = GGML_TYPES[type_id]
    if dims[0] % block:
        raise HeaderError(
            f"tensor {label} rows of {dims[0]} do not divide into {type_name} blocks of {block}"
        )
    if 0 in dims:
        return type_name, 0
    n_elements = math.prod(dims)
    if n_elements > INT64_MAX:
        raise HeaderError(f"tensor {label} shape {tuple(dims)} overflows a 64-bit count")
    n_bytes = n_elements // block * type_size
    if n_bytes > UINT64_MAX:
        raise HeaderError(f"tensor {label} of {n_bytes} bytes overflows a 64-bit size")
    return type_name, n_bytes


def _read_tensor(cur: _Cursor, i: int) -> tuple[str, str, tuple[int, ...], int, int]:
    name = cur.text(f"the name of tensor {i}", MAX_KEY_BYTES)
    label = shown(name)
    if not name or len(name.encode()) >= GGML_MAX_NAME:
        raise HeaderError(f"tensor {i} name {label} is empty or {GGML_MAX_NAME}+ bytes long")
    n_dims = cur.u32(f"the dimensions of {label}")
    if n_dims > GGML_MAX_DIMS:
        raise HeaderError(f"tensor {label} has {n_dims} dimensions (llama.cpp: at most 4)")
    dims = [cur.i64(f"the shape of {label}") for _ in range(n_dims)]
    if any(d < 0 for d in dims):
        raise HeaderError(f"tensor {label} has a negative dimension {tuple(dims)}")
    type_id = cur.i32(f"the type of {label}")
    type_name, n_bytes = _tensor_bytes(label, type_id, dims or [1])
    offset = cur.u64(f"the offset of {label}")
    return name, type_name, tuple(dims), n_bytes, offset


def _alignment(kv: dict[str, KeyValue]) -> int:
    field = kv.get("general.alignment")
    if field is None:
        return GGUF_DEFAULT_ALIGNMENT
    if field.type != UINT32:
        raise HeaderError(f"general.alignment is {field.type_name}, llama.cpp needs UINT32")
    value = int(field.value)  # type: ignore[arg-type]
    if value == 0 or value & (value - 1):
        raise HeaderError(f"general.alignment {value} is not a power of 2")
    return value


def _pad(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple


def parse_header(buf: memoryview) -> GGUFHeader:
    """The header at the start of `buf` (a whole file or its first bytes), or HeaderError."""
    cur = _Cursor(buf)
    cur.need(4, "the magic")
    if bytes(buf[:4]) != GGUF_MAGIC:
        raise HeaderError("not a GGUF file (bad magic)")
    cur.pos = 4
    version = cur.u32("the version")
    if version and not version & 0xFFFF:
        raise HeaderError(f"version {version:#x} looks big-endian; llama.cpp reads little-endian")
    if version not in GGUF_VERSIONS:
        raise HeaderError(f"GGUF version {version} is not one llama.cpp reads (2 or 3)")
    n_tensors = cur.i64("the tensor count")
    if not 0 <= n_tensors <= MAX_TENSORS:
        raise HeaderError(f"tensor count {n_tensors} is outside 0..{MAX_TENSORS}")
    n_kv = cur.i64("the key count")
    if not 0 <= n_kv <= MAX_KV:
        raise HeaderError(f"key count {n_kv} is outside 0..{MAX_KV}")
    kv = _read_kv(cur, n_kv)
    alignment = _alignment(kv)
    tensors: list[TensorEntry] = []
    seen: set[str] = set()
    expected = 0  # llama.cpp requires each tensor right after the previous one, padded
    for i in range(n_tensors):
        name, type_name, shape, n_bytes, offset = _read_tensor(cur, i)
        if name in seen:
            raise HeaderError(f"tensor {shown(name)} appears twice")
        seen.add(name)
        if offset != expected:
            raise HeaderError(
                f"tensor {shown(name)} is at data offset {offset}, expected {expected}"
            )
        expected = offset + _pad(n_bytes, alignment)
        tensors.append(TensorEntry(name, type_name, shape, n_bytes, offset))
    return GGUFHeader(version, alignment, kv, tensors, _pad(cur.pos, alignment))


def check_complete(header: GGUFHeader, size: int) -> None:
    """Refuse a file shorter than its tensor table says (a cut download), naming both sizes."""
    if size < header.needed_bytes:
        raise HeaderError(
            f"the file is truncated: {size} bytes, its header needs {header.needed_bytes}; "
            "re-download it"
        )
