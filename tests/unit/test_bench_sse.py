"""Reading chat streams that may be hostile: any bytes, cut anywhere, end in events or one
MalformedStream, never another exception; well-formed streams read the same however cut."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployer.core.bench.sse import (
    MAX_LINE_BYTES,
    MalformedStream,
    SseReader,
    read_chunk,
)


def _read(pieces: list[bytes]) -> list[str]:
    reader = SseReader()
    out: list[str] = []
    for p in pieces:
        out += reader.feed(p)
    return out + reader.close()


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


payloads = st.lists(st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=40),
                    min_size=1, max_size=8)  # fmt: skip


@given(payloads, st.sampled_from([b"\n", b"\r\n", b"\r"]), st.lists(st.integers(0, 10_000)))
def test_events_read_the_same_however_the_bytes_are_cut(
    datas: list[str], eol: bytes, cuts: list[int]
) -> None:
    stream = b"".join(b": comment" + eol + b"data: " + d.encode() + eol + eol for d in datas)
    assert _read(_cut(stream, cuts)) == _read([stream])
    assert _read([stream]) == datas


@given(st.binary(max_size=2000), st.lists(st.integers(0, 4000), max_size=6))
def test_any_bytes_give_events_or_malformed(data: bytes, cuts: list[int]) -> None:
    try:
        events = _read(_cut(data, cuts))
    except MalformedStream:
        return
    for e in events:
        with contextlib.suppress(MalformedStream):
            read_chunk(e)


def test_multi_line_data_is_joined() -> None:
    assert _read([b"data: a\ndata: b\n\n"]) == ["a\nb"]


def test_a_line_without_end_is_bounded() -> None:
    reader = SseReader()
    with pytest.raises(MalformedStream):
        for _ in range(MAX_LINE_BYTES // 65536 + 2):
            reader.feed(b"x" * 65536)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip
chunk_keys = st.sampled_from(["choices", "usage", "timings", "error", "id"])


@given(st.dictionaries(chunk_keys, json_values, max_size=4))
def test_hostile_chunks_are_read_or_refused(raw: dict[str, object]) -> None:
    try:
        chunk = read_chunk(json.dumps(raw))
    except MalformedStream:
        return
    for n in (chunk.completion_tokens, chunk.prompt_tokens):
        assert n is None or (isinstance(n, int) and 0 <= n <= 10_000_000)


@pytest.mark.parametrize(
    "data",
    ["[1]", "nul", "[" * 50_000 + "]" * 50_000, '{"choices": 3}', '{"choices": [{"delta": 1}]}',
     '{"usage": {"completion_tokens": -1}}', '{"usage": {"completion_tokens": true}}',
     '{"choices": [], "timings": {"prompt_n": 1, "prompt_ms": NaN, "prompt_per_second": 1, "predicted_per_second": 1}}'],
)  # fmt: skip
def test_malformed_chunks(data: str) -> None:
    with pytest.raises(MalformedStream):
        read_chunk(data)


def test_a_llama_server_last_chunk() -> None:
    data = json.dumps({
        "choices": [], "usage": {"completion_tokens": 64, "prompt_tokens": 130},
        "timings": {"prompt_n": 130, "prompt_ms": 400.5, "prompt_per_second": 324.6,
                    "predicted_n": 64, "predicted_per_second": 45.2},
    })  # fmt: skip
    c = read_chunk(data)
    assert (c.completion_tokens, c.prompt_tokens, c.has_content) == (64, 130, False)
    assert c.timings is not None and c.timings.predicted_per_second == 45.2
    assert read_chunk('{"choices": [{"delta": {"content": "x"}}]}').has_content
    assert not read_chunk(
        '{"choices": [{"delta": {"role": "assistant", "content": null}}]}'
    ).has_content
    assert read_chunk('{"error": {"message": "boom"}}').error == "boom"
