"""How many leading bytes of a GGUF file hold its header, found from a growing prefix.

A remote header is fetched in ranges until it is complete. This walker says how many bytes
that is without trusting the file: every length and count is checked against the cap before it
is followed, so a header that declares a 2^40-byte string is refused at once, and one that goes
on and on (strings, keys or tensors past the cap) is refused when the prefix reaches the cap.
It reads the same structure as gguf.GGUFReader and returns the same data offset, so the
reader that later parses the prefix never runs past it. What it accepts is what gguf_header
accepts, with gguf_header's limits (one set: MAX_TENSORS, MAX_KV, key and tensor-name lengths,
array item types, dimensions, version, byte order, alignment), so a header refused later is refused
here before more of it is fetched.

The limits hold for one model: every part of a split set together (HeaderBudget).
MAX_HEADER_BYTES: real headers are dominated by the tokenizer. Gemma 3's 262,144 tokens with
scores and types make 6.2 MiB (the demo model); Llama 3's 128k tokens plus 280k merges about
8 MiB; a 256k vocabulary with half a million merges about 15 MiB. 64 MiB leaves four times
the largest of these, and bounds what a lying header can make `plan` fetch and hold.
"""

from __future__ import annotations

import struct
from collections.abc import Generator
from dataclasses import dataclass

from deployer.core.errors import GGUFReadError, HeaderTooLarge
from deployer.core.model.gguf_header import (
    ARRAY,
    GGML_MAX_DIMS,
    GGML_MAX_NAME,
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGUF_VERSIONS,
    MAX_KEY_BYTES,
    MAX_KV,
    MAX_TENSORS,
    SCALAR_BYTES,
    STRING,
    UINT32,
)

MAX_HEADER_BYTES = 64 << 20
__all__ = ["MAX_HEADER_BYTES", "MAX_KV", "MAX_TENSORS", "HeaderBudget", "HeaderWalk"]
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
        self._fmt = "<"  # llama.cpp reads little-endian files only
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
        if bytes(self.buf[:4]) != GGUF_MAGIC:
            raise GGUFReadError(self.source, "not a GGUF file (bad magic)")
        version = self._u32(4)
        if version and version & 0xFFFF == 0:
            raise GGUFReadError(
                self.source, f"version {version:#x} looks big-endian; llama.cpp reads little-endian"
            )
        if version not in GGUF_VERSIONS:
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
        alignment = GGUF_DEFAULT_ALIGNMENT
        for _ in range(n_kv):
            key_start = pos
            pos = yield from self._string(pos)
            if pos - key_start - 8 > MAX_KEY_BYTES:
                raise GGUFReadError(self.source, f"a key longer than {MAX_KEY_BYTES} bytes")
            yield from self._have(pos + 4)
            vtype = self._u32(pos)
            pos += 4
            value_at = pos
            pos = yield from self._value(pos, vtype)
            if bytes(self.buf[key_start + 8 : value_at - 4]) == b"general.alignment":
                alignment = self._u32(value_at) if vtype == UINT32 else 0
                if alignment == 0 or alignment & (alignment - 1):
                    raise GGUFReadError(self.source, "general.alignment is not a uint32 power of 2")
        yield from self._room(pos, n_tensors, _TENSOR_MIN_BYTES)
        for _ in range(n_tensors):
            name_start = pos
            pos = yield from self._string(pos)
            if pos - name_start - 8 >= GGML_MAX_NAME:
                raise GGUFReadError(self.source, f"a tensor name of {GGML_MAX_NAME}+ bytes")
            yield from self._have(pos + 4)
            n_dims = self._u32(pos)
            if n_dims > GGML_MAX_DIMS:
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

    def _value(self, pos: int, vtype: int) -> _Steps:
        size = SCALAR_BYTES.get(vtype)
        if size is not None:
            yield from self._have(pos + size)
            return pos + size
        if vtype == STRING:
            return (yield from self._string(pos))
        if vtype != ARRAY:
            raise GGUFReadError(self.source, f"unknown value type {vtype}")
        yield from self._have(pos + 12)
        itype, count = self._u32(pos), self._u64(pos + 4)
        pos += 12
        # llama.cpp's 2^30 items per array needs no check here: that many items of 1+ bytes
        # are past MAX_HEADER_BYTES, which refuses them first (and says why).
        size = SCALAR_BYTES.get(itype)
        if size is not None:  # numbers: one jump
            yield from self._have(pos + count * size)
            return pos + count * size
        if itype == STRING:
            return (yield from self._strings(pos, count))
        # arrays of arrays: GGUF's format allows them, llama.cpp does not read them
        raise GGUFReadError(self.source, f"an array of unknown or nested type {itype}")

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
