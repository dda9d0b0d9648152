"""The load generator of `deployer bench`: closed-loop workers streaming OpenAI-compatible chat
completions over httpx2, timing each token (core's LoadRunner seam).

Every request is bounded (a total timeout, the stream's sizes in core/bench/sse.py) and ends as
a sample: completed, or with the kind of error that ended it. Errors are counted, never raised;
Ctrl-C ends the level with what was measured so far. The API key goes into one header only.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2

from deployer.core.bench.samples import (
    CONNECTION,
    EMPTY,
    MALFORMED,
    SERVER_ERROR,
    TIMEOUT,
    RequestSample,
    ServerTimings,
    http_error,
)
from deployer.core.bench.shapes import RequestShape
from deployer.core.bench.sse import DONE, MalformedStream, SseReader, read_chunk
from deployer.core.bench.sweep import LevelRun

MAX_INFO_BYTES = 1 << 20  # /props and /v1/models answers
MAX_SLOTS = 1024
MAX_CTX = 1 << 24


@dataclass(frozen=True)
class ServerInfo:
    """What llama-server's /props and /v1/models said (None: not said, or not believable)."""

    total_slots: int | None
    ctx: int | None
    model: str | None


def _headers(api_key: str | None) -> dict[str, str]:
    # identity: a compressed stream could inflate past every bound before it is read
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "Accept-Encoding": "identity",
    }
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _bounded_json(client: httpx2.Client, url: str, headers: dict[str, str]) -> Any:
    with client.stream("GET", url, headers=headers) as resp:
        if resp.status_code != 200:
            return None
        body = bytearray()
        for piece in resp.iter_bytes():
            body += piece
            if len(body) > MAX_INFO_BYTES:
                return None
    try:
        return json.loads(bytes(body))
    except (ValueError, RecursionError):
        return None


def _whole(value: Any, top: int) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= top
    return value if ok else None


def server_info(endpoint: str, api_key: str | None, timeout_s: float = 10.0) -> ServerInfo:
    """Slots and context from /props, the served model's id from /v1/models; None where absent."""
    slots = ctx = model = None
    try:
        with httpx2.Client(timeout=timeout_s, trust_env=False) as client:
            props = _bounded_json(client, f"{endpoint}/props", _headers(api_key))
            models = _bounded_json(client, f"{endpoint}/v1/models", _headers(api_key))
    except httpx2.HTTPError:
        return ServerInfo(None, None, None)
    if isinstance(props, dict):
        slots = _whole(props.get("total_slots"), MAX_SLOTS)
        settings = props.get("default_generation_settings")
        if isinstance(settings, dict):
            ctx = _whole(settings.get("n_ctx"), MAX_CTX)
    if isinstance(models, dict) and isinstance(models.get("data"), list) and models["data"]:
        first = models["data"][0]
        name = first.get("id") if isinstance(first, dict) else None
        if isinstance(name, str) and 0 < len(name) <= 256 and name.isprintable():
            model = name
    return ServerInfo(slots, ctx, model)


class _Recorder:
    """The times and counts of one request as its stream arrives."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.first: float | None = None
        self.times: list[float] = []
        self.usage_tokens: int | None = None
        self.prompt_tokens: int | None = None
        self.timings: ServerTimings | None = None
        self.error: str | None = None
        self.done = False

    def event(self, data: str, at: float) -> None:
        if data.strip() == DONE:
            self.done = True
            return
        chunk = read_chunk(data)
        if chunk.error is not None:
            self.error = SERVER_ERROR
            self.done = True
            return
        if chunk.has_content:
            if self.first is None:
                self.first = at
            if len(self.times) < 1_000_000:
                self.times.append(at)
        if chunk.completion_tokens is not None:
            self.usage_tokens = chunk.completion_tokens
        if chunk.prompt_tokens is not None:
            self.prompt_tokens = chunk.prompt_tokens
        if chunk.timings is not None:
            self.timings = chunk.timings

    def sample(self, end: float, error: str | None) -> RequestSample:
        error = error or self.error
        if error is None and self.first is None:
            error = EMPTY
        return RequestSample(
            start_s=self.start, end_s=end, first_token_s=self.first,
            token_times_s=tuple(self.times),
            output_tokens=self.usage_tokens if self.usage_tokens is not None else len(self.times),
            prompt_tokens=self.prompt_tokens, timings=self.timings, error=error,
        )  # fmt: skip


class HttpLoadRunner:
    """Streams chat completions at `endpoint` (deployer.core.bench.sweep.LoadRunner)."""

    def __init__(
        self,
        endpoint: str,
        *,
        model: str,
        api_key: str | None,
        timeout_s: float,
        on_request: Callable[[RequestSample], None] | None = None,
    ) -> None:
        self._url = f"{endpoint.rstrip('/')}/v1/chat/completions"
        self._model = model
        self._headers = _headers(api_key)
        self._timeout_s = timeout_s
        self._on_request = on_request
        self._index = itertools.count()  # each request its own prompt, over the whole sweep
        self._t0 = 0.0

    def _now(self) -> float:
        return time.perf_counter() - self._t0

    def _client(self, connections: int) -> httpx2.AsyncClient:
        limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
        # trust_env=False: no proxy from the environment between the bench and the server
        return httpx2.AsyncClient(
            timeout=httpx2.Timeout(self._timeout_s), limits=limits, trust_env=False
        )

    async def _request(self, client: httpx2.AsyncClient, shape: RequestShape) -> RequestSample:
        rec = _Recorder(self._now())
        body = shape.body(next(self._index), self._model)
        error: str | None = None
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._stream(client, body, rec)
        except TimeoutError:
            error = TIMEOUT
        except httpx2.TimeoutException:
            error = TIMEOUT
        except _HttpStatus as exc:
            error = http_error(exc.status)
        except (httpx2.TransportError, httpx2.StreamError):
            error = CONNECTION
        except MalformedStream:
            error = MALFORMED
        if error is None and not rec.done:
            error = MALFORMED  # the stream ended without its [DONE]
        sample = rec.sample(self._now(), error)
        if self._on_request is not None:
            self._on_request(sample)
        return sample

    async def _stream(
        self, client: httpx2.AsyncClient, body: dict[str, Any], rec: _Recorder
    ) -> None:
        async with client.stream("POST", self._url, json=body, headers=self._headers) as resp:
            if resp.status_code != 200:
                raise _HttpStatus(resp.status_code)  # the body is never read: it may be huge
            reader = SseReader()
            async for piece in resp.aiter_raw():
                at = self._now()
                for data in reader.feed(piece):
                    rec.event(data, at)
                    if rec.done:
                        return
            for data in reader.close():
                rec.event(data, self._now())

    async def _level(
        self, concurrency: int, requests: int, shape: RequestShape, out: list[RequestSample]
    ) -> None:
        todo = iter(range(requests))
        async with self._client(concurrency) as client:

            async def worker() -> None:
                for _ in todo:  # shared: each request is taken by one worker
                    out.append(await self._request(client, shape))

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    def warm_up(self, shape: RequestShape) -> RequestSample:
        """One request, not counted (loads caches, opens the way)."""
        out: list[RequestSample] = []
        self._t0 = time.perf_counter()
        asyncio.run(self._level(1, 1, shape, out))  # Ctrl-C here ends the bench
        return out[0] if out else RequestSample(0.0, 0.0, error=CONNECTION)

    def run_level(self, concurrency: int, requests: int, shape: RequestShape) -> LevelRun:
        """`concurrency` workers, `requests` in all; Ctrl-C returns what completed."""
        out: list[RequestSample] = []
        self._t0 = time.perf_counter()
        try:
            asyncio.run(self._level(concurrency, requests, shape, out))
        except KeyboardInterrupt:
            return LevelRun(list(out), interrupted=True)
        return LevelRun(list(out))


class _HttpStatus(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status
