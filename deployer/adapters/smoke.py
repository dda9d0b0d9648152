"""Prove a deployment with one real completion: chat, or a plain completion that is checked.

Which kind a model gets is decided in deployer.core.serve.proof (chat when the GGUF carries a chat
template). llama-server takes both through its OpenAI-compatible API; Ollama's plain
completion goes through its own generate API with `raw`, so the Modelfile TEMPLATE written for
a template-less GGUF does not wrap the prompt in chat turns.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from deployer.adapters.keyed_http import open_direct
from deployer.core.errors import SmokeTestFailed
from deployer.core.serve.proof import (
    CHAT_PROMPT,
    COMPLETION_EXPECTED,
    COMPLETION_PROMPT,
    SmokeKind,
    SmokeResult,
    continues_as_expected,
)

__all__ = [
    "SmokeResult",
    "chat_smoke_test",
    "completion_smoke_test",
    "llama_server_smoke",
    "ollama_generate_smoke_test",
    "ollama_smoke",
]


def _post(
    endpoint: str, path: str, body: dict[str, Any], api_key: str | None, timeout_s: float
) -> tuple[dict[str, Any], float]:
    """POST JSON; the decoded answer and the wall seconds, or SmokeTestFailed."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(
        f"{endpoint}{path}", data=json.dumps(body).encode(), headers=headers
    )
    started = time.monotonic()
    try:
        with open_direct(req, timeout_s) as resp:  # the key never via a proxy or a redirect
            data = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise SmokeTestFailed(endpoint, str(exc)) from exc
    if not isinstance(data, dict):
        raise SmokeTestFailed(endpoint, f"unexpected answer: {str(data)[:200]}")
    return data, time.monotonic() - started


def _server_timings(data: dict[str, Any]) -> tuple[float | None, float | None]:
    """llama-server's own time to first token (ms) and decode speed (tokens/s), if given."""
    timings = data.get("timings") or {}
    ttft = timings.get("prompt_ms")
    tps = timings.get("predicted_per_second")
    return (
        round(float(ttft), 1) if ttft is not None else None,
        round(float(tps), 1) if tps is not None else None,
    )


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
        "messages": [{"role": "user", "content": CHAT_PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    data, seconds = _post(endpoint, "/v1/chat/completions", body, api_key, timeout_s)
    try:
        text = str(data["choices"][0]["message"]["content"])
        tokens = int(data.get("usage", {}).get("completion_tokens", 0))
    except (KeyError, IndexError, TypeError) as exc:
        raise SmokeTestFailed(endpoint, f"unexpected answer: {str(data)[:200]}") from exc
    if tokens <= 0:
        raise SmokeTestFailed(endpoint, "the server answered with no tokens")
    ttft, tps = _server_timings(data)
    return SmokeResult(text, tokens, seconds, ttft, tps, kind="chat", prompt=CHAT_PROMPT)


def completion_smoke_test(
    endpoint: str,
    *,
    model: str,
    api_key: str | None = None,
    max_tokens: int = 8,
    timeout_s: float = 120.0,
    prompt: str = COMPLETION_PROMPT,
    expected: str = COMPLETION_EXPECTED,
) -> SmokeResult:
    """POST one plain completion of `prompt` (greedy) and check it continues with `expected`."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    data, seconds = _post(endpoint, "/v1/completions", body, api_key, timeout_s)
    try:
        text = str(data["choices"][0]["text"])
        tokens = int(data.get("usage", {}).get("completion_tokens", 0))
    except (KeyError, IndexError, TypeError) as exc:
        raise SmokeTestFailed(endpoint, f"unexpected answer: {str(data)[:200]}") from exc
    if tokens <= 0:
        raise SmokeTestFailed(endpoint, "the server answered with no tokens")
    ttft, tps = _server_timings(data)
    return SmokeResult(
        text, tokens, seconds, ttft, tps, kind="completion", prompt=prompt, expected=expected,
        matched=continues_as_expected(text, expected),
    )  # fmt: skip


def ollama_generate_smoke_test(
    endpoint: str,
    *,
    model: str,
    max_tokens: int = 8,
    timeout_s: float = 120.0,
    prompt: str = COMPLETION_PROMPT,
    expected: str = COMPLETION_EXPECTED,
) -> SmokeResult:
    """POST one raw generate to Ollama (no template, greedy) and check its continuation."""
    body = {
        "model": model,
        "prompt": prompt,
        "raw": True,
        "stream": False,
        "options": {"temperature": 0, "num_predict": max_tokens},
    }
    data, seconds = _post(endpoint, "/api/generate", body, None, timeout_s)
    try:
        text = str(data["response"])
        tokens = int(data.get("eval_count", 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise SmokeTestFailed(endpoint, f"unexpected answer: {str(data)[:200]}") from exc
    if tokens <= 0:
        raise SmokeTestFailed(endpoint, "the server answered with no tokens")
    # Ollama reports durations in nanoseconds: prompt evaluation is the time to first token.
    prompt_ns, eval_ns = data.get("prompt_eval_duration"), data.get("eval_duration")
    ttft = round(float(prompt_ns) / 1e6, 1) if prompt_ns else None
    tps = round(tokens / (float(eval_ns) / 1e9), 1) if eval_ns else None
    return SmokeResult(
        text, tokens, seconds, ttft, tps, kind="completion", prompt=prompt, expected=expected,
        matched=continues_as_expected(text, expected),
    )  # fmt: skip


def llama_server_smoke(
    endpoint: str, *, model: str, api_key: str | None, kind: SmokeKind = "chat"
) -> SmokeResult:
    """deploy's smoke test on llama-server (deployer.core.serve.deploy.SmokeTester)."""
    if kind == "completion":
        return completion_smoke_test(endpoint, model=model, api_key=api_key)
    return chat_smoke_test(endpoint, model=model, api_key=api_key)


def ollama_smoke(
    endpoint: str, *, model: str, api_key: str | None, kind: SmokeKind = "chat"
) -> SmokeResult:
    """deploy's smoke test on Ollama: its OpenAI chat API, or a raw generate (no key: none)."""
    if kind == "completion":
        return ollama_generate_smoke_test(endpoint, model=model)
    return chat_smoke_test(endpoint, model=model, api_key=api_key)
