"""Prove a deployment with one real chat completion over its OpenAI-compatible API."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from deployer.core.runtime_errors import SmokeTestFailed


@dataclass(frozen=True)
class SmokeResult:
    """What the first completion showed."""

    text: str
    completion_tokens: int
    seconds: float
    time_to_first_token_ms: float | None
    tokens_per_s: float | None


def chat_smoke_test(
    endpoint: str,
    *,
    model: str,
    api_key: str | None = None,
    max_tokens: int = 8,
    timeout_s: float = 120.0,
) -> SmokeResult:
    """POST one chat completion (at most `max_tokens`) and read the server's own timings."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello in five words."}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(
        f"{endpoint}/v1/chat/completions", data=json.dumps(body).encode(), headers=headers
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            data = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise SmokeTestFailed(endpoint, str(exc)) from exc
    seconds = time.monotonic() - started
    try:
        text = str(data["choices"][0]["message"]["content"])
        tokens = int(data.get("usage", {}).get("completion_tokens", 0))
    except (KeyError, IndexError, TypeError) as exc:
        raise SmokeTestFailed(endpoint, f"unexpected answer: {str(data)[:200]}") from exc
    if tokens <= 0:
        raise SmokeTestFailed(endpoint, "the server answered with no tokens")
    timings = data.get("timings") or {}
    ttft = timings.get("prompt_ms")
    tps = timings.get("predicted_per_second")
    return SmokeResult(
        text=text,
        completion_tokens=tokens,
        seconds=seconds,
        time_to_first_token_ms=round(float(ttft), 1) if ttft is not None else None,
        tokens_per_s=round(float(tps), 1) if tps is not None else None,
    )
