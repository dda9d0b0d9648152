"""A small non-streaming client for OpenAI-compatible servers (llama-server, Ollama, vLLM, a
closed API): one request per call, retried with backoff on what is worth retrying.

Retried: HTTP 429 and 5xx, connection errors and timeouts, at most `max_attempts` tries; the
wait is exponential with full jitter (a random share of base x 2^n, capped), or the server's
Retry-After when it gives one (capped too). Not retried: other 4xx (a bad key stays bad).
Answers are read bounded. The API key goes in the Authorization header only, and is cut out
of any error text a server sends back, so it cannot reach the results file or a report.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx2

from deployer.core.eval.flow import Answer, AskFailure, ChatRequest

MAX_ANSWER_BYTES = 4 << 20
RETRY_AFTER_MAX_S = 60.0
RETRIED_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def backoff_delay(
    attempt: int, retry_after_s: float | None, *, base_s: float, cap_s: float,
    rand: Callable[[], float] = random.random,
) -> float:  # fmt: skip
    """Seconds to wait before try `attempt + 1` (attempt counts from 1): the server's
    Retry-After (capped at RETRY_AFTER_MAX_S) when given, else full jitter over
    min(cap, base x 2^(attempt-1))."""
    if retry_after_s is not None:
        return min(max(retry_after_s, 0.0), RETRY_AFTER_MAX_S)
    return rand() * min(cap_s, base_s * 2.0 ** (attempt - 1))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from `now`: delta-seconds or an HTTP date; None if neither."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # str.isdigit() alone takes "²", which float() refuses
        return float(text[:6])
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


class _Retry(Exception):
    def __init__(self, kind: str, detail: str, retry_after_s: float | None = None) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.retry_after_s = kind, detail, retry_after_s


class _Fail(_Retry):
    """Not worth retrying."""


class ChatClient:
    """Asks one endpoint (deployer.core.eval.flow.Asker)."""

    def __init__(
        self, base_url: str, model: str, api_key: str | None, *, timeout_s: float = 120.0,
        max_attempts: int = 4, backoff_base_s: float = 0.5, backoff_cap_s: float = 20.0,
        sleep: Callable[[float], None] = time.sleep, transport: httpx2.BaseTransport | None = None,
    ) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._key = api_key
        self.max_attempts = max(1, max_attempts)
        self.backoff_base_s, self.backoff_cap_s = backoff_base_s, backoff_cap_s
        self._sleep = sleep
        self.timeout_s = timeout_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx2.Client(
            headers=headers, timeout=httpx2.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            trust_env=False, follow_redirects=False, transport=transport,
        )  # fmt: skip

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _body(self, req: ChatRequest) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.model, "max_tokens": req.max_tokens,
            "temperature": req.temperature, "seed": req.seed, "stream": False,
        }  # fmt: skip
        if req.messages is not None:
            body["messages"] = [{"role": r, "content": c} for r, c in req.messages]
            return "/chat/completions", body
        body["prompt"] = req.prompt
        return "/completions", body

    def ask(self, request: ChatRequest) -> Answer | AskFailure:
        """One request with its retries; a failure is returned, never raised."""
        path, body = self._body(request)
        started = time.time()
        for attempt in range(1, self.max_attempts + 1):
            t0 = time.monotonic()
            try:
                text, tin, tout = self._once(path, body, chat=request.messages is not None)
                return Answer(text, tin, tout, time.monotonic() - t0, attempt, started, time.time())
            except _Fail as exc:
                return AskFailure(exc.kind, self._redact(exc.detail), attempt, started, time.time())
            except _Retry as exc:
                if attempt == self.max_attempts:
                    detail = f"{self._redact(exc.detail)} (after {attempt} attempts)"
                    return AskFailure(exc.kind, detail, attempt, started, time.time())
                self._sleep(backoff_delay(attempt, exc.retry_after_s, base_s=self.backoff_base_s,
                                          cap_s=self.backoff_cap_s))  # fmt: skip
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(
        self, path: str, body: dict[str, Any], *, chat: bool
    ) -> tuple[str, int | None, int | None]:
        url = self.base_url + path
        # httpx's timeouts bound each connect and each read; a server that trickles a byte
        # now and then would never trip them, so the whole answer also has a deadline.
        deadline = time.monotonic() + self.timeout_s
        try:
            with self._client.stream("POST", url, json=body) as resp:
                raw = bytearray()
                for chunk in resp.iter_bytes():
                    raw += chunk
                    if len(raw) > MAX_ANSWER_BYTES:
                        raise _Fail("bad answer", f"answer larger than {MAX_ANSWER_BYTES} bytes")
                    if time.monotonic() > deadline:
                        raise _Retry("timeout", f"answer not complete in {self.timeout_s:g} s")
                status = resp.status_code
                retry_after = parse_retry_after(resp.headers.get("retry-after"), time.time())
        except httpx2.TimeoutException as exc:
            raise _Retry("timeout", f"no answer in time ({type(exc).__name__})") from None
        except httpx2.ConnectError as exc:
            raise _Retry("connection", f"cannot connect to {self.base_url}: {exc}") from None
        except httpx2.TransportError as exc:
            raise _Retry("connection", f"{type(exc).__name__}: {exc}") from None
        text = bytes(raw[:300]).decode("utf-8", "replace")
        if status in RETRIED_STATUS or status >= 500:
            raise _Retry(f"http {status}", f"HTTP {status}: {text}", retry_after)
        if status >= 400:
            raise _Fail(f"http {status}", f"HTTP {status}: {text}")
        return _parse(bytes(raw), chat=chat)


def _parse(raw: bytes, *, chat: bool) -> tuple[str, int | None, int | None]:
    try:
        data = json.loads(raw)
        choice = data["choices"][0]
        content = choice["message"]["content"] if chat else choice["text"]
    except (ValueError, KeyError, IndexError, TypeError, RecursionError):
        raise _Fail("bad answer", "not an OpenAI-style completion") from None
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise _Fail("bad answer", "the answer's content is not text")
    usage = data.get("usage") if isinstance(data, dict) else None
    return content, _tokens(usage, "prompt_tokens"), _tokens(usage, "completion_tokens")


def _tokens(usage: Any, key: str) -> int | None:
    value = usage.get(key) if isinstance(usage, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 40:
        return None
    return value
