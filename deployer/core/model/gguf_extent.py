"""How many leading bytes of a GGUF file hold its header, found from a growing prefix.

A remote header is fetched in ranges until it is complete. This walker says how many bytes
that is without trusting the file: every length and count is checked against the cap before it
is followed, so a header that declares a 2^40-byte string is refused at once, and one that goes
on and on (strings, keys or tensors past the cap) is refused when the prefix reaches the cap.
It reads the same structure as gguf.GGUFReader (GGUF v2/v3, either byte order) and returns
the same data offset, so the reader that later parses the prefix never runs past it.

The limits hold for one model: every part of a split set together (HeaderBudget).
MAX_HEADER_BYTES: real headers are dominated by the tokenizer. Gemma 3's 262,144 tokens with
scores and types make 6.2 MiB (the demo model); Llama 3's 128k tokens plus 280k merges about
8 MiB; a 256k vocabulary with half a million merges about 15 MiB. 64 MiB leaves four times
the largest of these, and bounds what a lying header can make `plan` fetch and hold.
MAX_TENSORS: the largest published GGUFs list about 2,000 tensors (Llama 3.1 405B: 1,138;
DeepSeek-V3 with merged experts: ~1,100); gguf's reader spends ~0.6 ms on each, so 16,384
bounds a hostile table to ~10 s. MAX_KV: real files have under 100 key/values.
"""

from __future__ import annotations

import struct
from collections.abc import Generator
from dataclasses import dataclass

from deployer.core.errors import GGUFReadError, HeaderTooLarge

MAX_HEADER_BYTES = 64 << 20
MAX_TENSORS = 1 << 14
MAX_KV = 1 << 14
_MAGIC = b"GGUF"
_VERSIONS = (2, 3)
_STRING, _ARRAY, _UINT32 = 8, 9, 4
# GGUF value type -> bytes per scalar (string and array are walked)
_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_MAX_ARRAY_DEPTH = 4  # arrays of arrays: GGUF allows them; nothing real nests deeper than 1
_MAX_DIMS = 8  # ggml tensors have at most 4
_DEFAULT_ALIGNMENT = 32
_KV_MIN_BYTES = 8 + 4 + 1  # empty key, type, smallest value
_TENSOR_MIN_BYTES = 8 + 4 + 4 + 8  # empty name, no dims, type, offset

# Walk steps yield the total prefix length they need next; the driver supplies it.
_Steps = Generator[int, None, int]


@dataclass
class HeaderBudget:
    """What the headers of one model (every part of a split set together) may use."""

    bytes_left: int = MAX_HEADER_BYTES
    tensors_left: int = MAX_TENSORS
    kv_left: int = MAX_KV


class HeaderWalk:
    """Feed a GGUF file's bytes from offset 0; `length` is set once the header is complete.

    `need` is how many bytes of the file the walk must see before it can go on (the driver
    fetches at least that much); the walk resumes where it stopped, so each byte is read once.
    Lengths past the budget or the file end the walk with HeaderTooLarge or GGUFReadError.
    """

    def __init__(self, source: str, file_bytes: int, budget: HeaderBudget | None = None) -> None:
        self.source, self.file_bytes = source, file_bytes
        self.budget = budget or HeaderBudget()
        self.cap = self.budget.bytes_left
        self.buf = bytearray()
        self.length: int | None = None
        self._fmt = "<"
        self._steps = self._walk()
        self.need = next(self._steps)

    def feed(self, data: bytes) -> int | None:
        """Append the next bytes of the file; the header's length once it is known."""
        self.buf += data
        if self.length is None and len(self.buf) >= self.need:
            try:
                self.need = self._steps.send(None)
            except StopIteration as done:
                self.length = int(done.value)
                self.budget.bytes_left -= self.length
        return self.length

    # -- the walk -------------------------------------------------------------------------------
    def _have(self, end: int) -> Generator[int, None, None]:
        """Wait until the prefix reaches `end` bytes; refuse ends past the cap or the file."""
        if end > self.cap and self.file_bytes > self.cap:
            used = MAX_HEADER_BYTES - self.cap  # by the parts before this one
            raise HeaderTooLarge(self.source, MAX_HEADER_BYTES, used + end)
        if end > self.file_bytes:
            raise GGUFReadError(
                self.source,
                f"the header runs past the end of the file (needs {end} of "
                f"{self.file_bytes} bytes): truncated, or not a GGUF file",
            )
        while len(self.buf) < end:
            yield end

    def _room(self, pos: int, count: int, each: int) -> Generator[int, None, None]:
        """`count` items of at least `each` bytes from pos must fit in the cap (and the file)."""
        yield from self._have(pos + count * each)

    def _u32(self, pos: int) -> int:
        return int(struct.unpack_from(self._fmt + "I", self.buf, pos)[0])

    def _u64(self, pos: int) -> int:
        return int(struct.unpack_from(self._fmt + "Q", self.buf, pos)[0])

    def _walk(self) -> _Steps:
        yield from self._have(24)
        if bytes(self.buf[:4]) != _MAGIC:
            raise GGUFReadError(self.source, "not a GGUF file (bad magic)")
        version = self._u32(4)
        if version & 0xFFFF == 0:  # written on a big-endian machine (as GGUFReader decides)
            self._fmt = ">"
            version = self._u32(4)
        if version not in _VERSIONS:
            raise GGUFReadError(self.source, f"unsupported GGUF version {version}")
        n_tensors, n_kv = self._u64(8), self._u64(16)
        budget = self.budget
        if n_tensors > budget.tensors_left:
            raise GGUFReadError(
                self.source,
                f"declares {n_tensors} tensors; deployer reads at most {MAX_TENSORS} per model "
                "(the largest real ones have about 2,000)",
            )
        if n_kv > budget.kv_left:
            raise GGUFReadError(
                self.source,
                f"declares {n_kv} key/values; deployer reads at most {MAX_KV} per model "
                "(real ones have under 100)",
            )
        budget.tensors_left -= n_tensors
        budget.kv_left -= n_kv
        pos = 24
        yield from self._room(pos, n_kv, _KV_MIN_BYTES)
        alignment = _DEFAULT_ALIGNMENT
        for _ in range(n_kv):
            key_start = pos
            pos = yield from self._string(pos)
            yield from self._have(pos + 4)
            vtype = self._u32(pos)
            pos += 4
            value_at = pos
            pos = yield from self._value(pos, vtype, 0)
            if bytes(self.buf[key_start + 8 : value_at - 4]) == b"general.alignment":
                if vtype != _UINT32 or self._u32(value_at) == 0:
                    raise GGUFReadError(self.source, "general.alignment is not a positive uint32")
                alignment = self._u32(value_at)
        yield from self._room(pos, n_tensors, _TENSOR_MIN_BYTES)
        for _ in range(n_tensors):
            pos = yield from self._string(pos)
            yield from self._have(pos + 4)
            n_dims = self._u32(pos)
            if n_dims > _MAX_DIMS:
                raise GGUFReadError(self.source, f"a tensor with {n_dims} dimensions")
            pos += 4 + 8 * n_dims + 4 + 8
            yield from self._have(pos)
        end = -(-pos // alignment) * alignment
        yield from self._have(end)
        return end

    def _string(self, pos: int) -> _Steps:
        yield from self._have(pos + 8)
        end = pos + 8 + self._u64(pos)
        yield from self._have(end)
        return end

    def _value(self, pos: int, vtype: int, depth: int) -> _Steps:
        size = _SCALAR_BYTES.get(vtype)
        if size is not None:
            yield from self._have(pos + size)
            return pos + size
        if vtype == _STRING:
            return (yield from self._string(pos))
        if vtype != _ARRAY or depth >= _MAX_ARRAY_DEPTH:
            raise GGUFReadError(self.source, f"unknown or too deeply nested value type {vtype}")
        yield from self._have(pos + 12)
        itype, count = self._u32(pos), self._u64(pos + 4)
        pos += 12
        size = _SCALAR_BYTES.get(itype)
        if size is not None:  # numbers: one jump
            yield from self._have(pos + count * size)
            return pos + count * size
        if itype == _STRING:
            return (yield from self._strings(pos, count))
        yield from self._room(pos, count, 12)
        for _ in range(count):
            pos = yield from self._value(pos, itype, depth + 1)
        return pos

    def _strings(self, pos: int, count: int) -> _Steps:
        """A string array: the hot loop of real headers (262k tokens), kept lean."""
        yield from self._room(pos, count, 8)
        unpack = struct.Struct(self._fmt + "Q").unpack_from
        buf = self.buf
        for _ in range(count):
            if pos + 8 > len(buf):
                yield from self._have(pos + 8)
            pos += 8 + unpack(buf, pos)[0]
            if pos > self.cap:
                yield from self._have(pos)  # refuses
        yield from self._have(pos)
        return pos
