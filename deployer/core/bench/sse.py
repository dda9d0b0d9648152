"""Reading an OpenAI-compatible chat stream: server-sent events, then each event's JSON chunk.

Everything here is hostile input: lines, events and the whole answer are bounded, JSON that is
not the shape the API promises is an error, and numbers are checked before they are believed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from deployer.core.bench.samples import ServerTimings

MAX_LINE_BYTES = 1 << 20  # one `data:` line (a chunk holds a few tokens)
MAX_EVENT_BYTES = 1 << 20
MAX_STREAM_BYTES = 64 << 20  # a whole answer
MAX_TOKENS = 10_000_000  # a usage count above this is not believed
MAX_RATE = 1e9  # tokens/s or ms: bounds on the timings llama-server reports
DONE = "[DONE]"
_LINE_END = re.compile(rb"\r\n|\r|\n")


class MalformedStream(Exception):
    """The answer is not a bounded event stream of chat chunks; the text says how."""


class SseReader:
    """Turns the bytes of a response, in pieces of any size, into the `data` of each event."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._data: list[str] = []
        self._event_bytes = 0
        self._total = 0
        self._cr = False  # the last piece ended in \r: a \n next is the same line end

    def feed(self, piece: bytes) -> list[str]:
        """The events completed by `piece` (each its data lines joined by newlines)."""
        self._total += len(piece)
        if self._total > MAX_STREAM_BYTES:
            raise MalformedStream(f"answer over {MAX_STREAM_BYTES} bytes")
        out: list[str] = []
        start = 1 if self._cr and piece.startswith(b"\n") else 0
        self._cr = False
        for end in _LINE_END.finditer(piece, start):
            self._take(piece[start : end.start()])
            self._line(bytes(self._buf), out)
            self._buf.clear()
            start = end.end()
            self._cr = end.group() == b"\r" and start == len(piece)
        self._take(piece[start:])
        return out

    def _take(self, part: bytes) -> None:
        if len(self._buf) + len(part) > MAX_LINE_BYTES:
            raise MalformedStream(f"a line over {MAX_LINE_BYTES} bytes")
        self._buf += part

    def close(self) -> list[str]:
        """The last event, if the answer ended without a blank line after it."""
        out: list[str] = []
        if self._buf:
            self._line(bytes(self._buf), out)
            self._buf.clear()
        self._line(b"", out)
        return out

    def _line(self, raw: bytes, out: list[str]) -> None:
        if not raw:  # a blank line ends an event
            if self._data:
                out.append("\n".join(self._data))
            self._data, self._event_bytes = [], 0
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedStream("a line is not UTF-8") from None
        name, _, value = text.partition(":")
        if name != "data":
            return  # comments (":"), event, id, retry: not used by the chat API
        value = value[1:] if value.startswith(" ") else value
        self._event_bytes += len(raw)
        if self._event_bytes > MAX_EVENT_BYTES:
            raise MalformedStream(f"an event over {MAX_EVENT_BYTES} bytes")
        self._data.append(value)


@dataclass(frozen=True)
class Chunk:
    """What one chat chunk says: whether it carries output, and the final counts."""

    has_content: bool = False
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    timings: ServerTimings | None = None
    error: str | None = None  # an error object in the stream, shown shortened


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
        raise MalformedStream(f"{what} is not a token count")
    return value


def _rate(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedStream(f"{what} is not a number")
    number = float(value)
    if not math.isfinite(number) or not 0 <= number <= MAX_RATE:
        raise MalformedStream(f"{what} is out of range")
    return number


def _timings(raw: Any) -> ServerTimings | None:
    """llama-server's timings, when all four figures are there and believable."""
    if not isinstance(raw, dict):
        return None
    keys = ("prompt_n", "prompt_ms", "prompt_per_second", "predicted_per_second")
    if any(k not in raw for k in keys):
        return None
    return ServerTimings(
        prompt_n=_count(raw["prompt_n"], "timings.prompt_n"),
        prompt_ms=_rate(raw["prompt_ms"], "timings.prompt_ms"),
        prompt_per_second=_rate(raw["prompt_per_second"], "timings.prompt_per_second"),
        predicted_per_second=_rate(raw["predicted_per_second"], "timings.predicted_per_second"),
    )


def _has_content(choices: Any) -> bool:
    if not isinstance(choices, list):
        raise MalformedStream("choices is not a list")
    for choice in choices:
        if not isinstance(choice, dict):
            raise MalformedStream("a choice is not an object")
        delta = choice.get("delta")
        if delta is None:
            continue
        if not isinstance(delta, dict):
            raise MalformedStream("a delta is not an object")
        for key in ("content", "reasoning_content"):
            text = delta.get(key)
            if text is not None and not isinstance(text, str):
                raise MalformedStream(f"delta.{key} is not text")
            if text:
                return True
    return False


def read_chunk(data: str) -> Chunk:
    """One event's data as a chat chunk; MalformedStream when it is not one."""
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError):
        raise MalformedStream("an event is not JSON") from None
    if not isinstance(raw, dict):
        raise MalformedStream("an event is not a JSON object")
    if "error" in raw:
        err = raw["error"]
        message = err.get("message") if isinstance(err, dict) else err
        return Chunk(error=str(message)[:200])
    usage = raw.get("usage")
    completion = prompt = None
    if usage is not None:
        if not isinstance(usage, dict):
            raise MalformedStream("usage is not an object")
        if "completion_tokens" in usage:
            completion = _count(usage["completion_tokens"], "usage.completion_tokens")
        if "prompt_tokens" in usage:
            prompt = _count(usage["prompt_tokens"], "usage.prompt_tokens")
    return Chunk(
        has_content=_has_content(raw.get("choices", [])),
        completion_tokens=completion,
        prompt_tokens=prompt,
        timings=_timings(raw.get("timings")),
    )
