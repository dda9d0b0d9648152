"""The smoke test: which proof a model gets, how a continuation is checked, what is sent.

The servers are played by a loopback HTTP handler that records each request and answers in
the documented shape of llama-server's OpenAI-compatible API and of Ollama's generate API; the
real servers are exercised in tests/integration (test_native, test_deploy, the Ollama contract).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployer.adapters.smoke import llama_server_smoke, ollama_smoke
from deployer.core.errors import SmokeTestFailed
from deployer.core.serve.proof import (
    COMPLETION_EXPECTED,
    COMPLETION_PROMPT,
    SmokeResult,
    continues_as_expected,
    describe,
    smoke_kind,
)


def test_smoke_kind_follows_the_chat_template() -> None:
    assert smoke_kind(True) == "chat"
    assert smoke_kind(False) == "completion"


def test_the_prompt_is_a_count_whose_next_number_is_expected() -> None:
    numbers = [int(n) for n in COMPLETION_PROMPT.rstrip(",").split(", ")]
    assert numbers == list(range(1, len(numbers) + 1))
    assert str(len(numbers) + 1) == COMPLETION_EXPECTED


@pytest.mark.parametrize(
    ("text", "ok"),
    [(" 8, 9, 10", True), ("8", True), ("\n8,", True), (" 8.", True),
     (" 80", False), (" 18", False), (" eight", False), ("", False), (" 7, 8", False),
     ("<h2>8", False)],
)  # fmt: skip
def test_continuation_must_start_with_the_expected_word(text: str, ok: bool) -> None:
    assert continues_as_expected(text, "8") is ok


@given(
    space=st.text(alphabet=" \t\n", max_size=3),
    rest=st.text(max_size=20).filter(lambda r: not r[:1].isalnum() and r[:1] != "_"),
)
def test_any_whitespace_then_the_word_then_a_non_word_matches(space: str, rest: str) -> None:
    assert continues_as_expected(f"{space}{COMPLETION_EXPECTED}{rest}")


@given(text=st.text(max_size=30))
def test_a_match_always_holds_the_expected_word_first(text: str) -> None:
    if continues_as_expected(text):
        assert text.lstrip().startswith(COMPLETION_EXPECTED)


def test_describe_says_plainly_when_the_continuation_is_unexpected() -> None:
    chat = SmokeResult("Hello there", 8, 0.1, None, None)
    ok = replace(chat, text=" 8, 9", kind="completion", prompt=COMPLETION_PROMPT,
                 expected="8", matched=True)  # fmt: skip
    weak = replace(ok, text=" banana", matched=False)
    assert "continued as expected" in describe(ok) and COMPLETION_PROMPT in describe(ok)
    assert "did not continue as expected" in describe(weak) and "'8'" in describe(weak)
    assert describe(chat) == "chat answer 'Hello there'"


class _Fake:
    """A loopback server that records requests and answers with `reply(path, body)`."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any], str | None]] = []
        self.answers: dict[str, dict[str, Any]] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append((self.path, body, self.headers.get("Authorization")))
                answer = fake.answers.get(self.path)
                raw = json.dumps(answer).encode()
                self.send_response(200 if answer is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def fake() -> Iterator[_Fake]:
    f = _Fake()
    yield f
    f.server.shutdown()
    f.server.server_close()


def _completion(text: str, tokens: int) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "text": text, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": tokens},
        "timings": {"prompt_ms": 12.34, "predicted_per_second": 45.67},
    }


def test_llama_server_completion_proof(fake: _Fake) -> None:
    fake.answers["/v1/completions"] = _completion(" 8, 9, 10, 1", 8)
    got = llama_server_smoke(fake.url, model="demo", api_key="k", kind="completion")
    ((path, body, auth),) = fake.requests
    assert path == "/v1/completions" and auth == "Bearer k"
    assert body == {"model": "demo", "prompt": COMPLETION_PROMPT, "max_tokens": 8,
                    "temperature": 0}  # fmt: skip
    assert (got.kind, got.prompt, got.expected, got.matched) == (
        "completion", COMPLETION_PROMPT, COMPLETION_EXPECTED, True)  # fmt: skip
    assert (got.text, got.completion_tokens) == (" 8, 9, 10, 1", 8)
    assert (got.time_to_first_token_ms, got.tokens_per_s) == (12.3, 45.7)


def test_llama_server_weak_completion_is_reported_not_raised(fake: _Fake) -> None:
    fake.answers["/v1/completions"] = _completion("\n\n<h2><strong>", 8)
    got = llama_server_smoke(fake.url, model="demo", api_key=None, kind="completion")
    assert got.matched is False and got.text == "\n\n<h2><strong>"
    assert fake.requests[0][2] is None  # no key, no header


def test_llama_server_chat_proof_is_unchanged(fake: _Fake) -> None:
    fake.answers["/v1/chat/completions"] = {
        "choices": [{"message": {"role": "assistant", "content": "Hello!"}}],
        "usage": {"completion_tokens": 3},
    }
    got = llama_server_smoke(fake.url, model="m", api_key=None, kind="chat")
    ((path, body, _),) = fake.requests
    assert path == "/v1/chat/completions" and body["messages"][0]["role"] == "user"
    assert (got.kind, got.matched, got.expected, got.text) == ("chat", None, None, "Hello!")
    assert got.time_to_first_token_ms is None and got.tokens_per_s is None


@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_no_tokens_or_a_wrong_shape_fails_the_smoke_test(fake: _Fake, kind: str) -> None:
    path = "/v1/completions" if kind == "completion" else "/v1/chat/completions"
    fake.answers[path] = _completion("", 0) if kind == "completion" else {
        "choices": [{"message": {"content": ""}}], "usage": {"completion_tokens": 0}}  # fmt: skip
    with pytest.raises(SmokeTestFailed, match="no tokens"):
        llama_server_smoke(fake.url, model="m", api_key=None, kind=kind)  # type: ignore[arg-type]
    fake.answers[path] = {"unexpected": True}
    with pytest.raises(SmokeTestFailed, match="unexpected answer"):
        llama_server_smoke(fake.url, model="m", api_key=None, kind=kind)  # type: ignore[arg-type]


def test_ollama_completion_is_a_raw_generate_with_its_timings(fake: _Fake) -> None:
    fake.answers["/api/generate"] = {
        "model": "demo-o", "response": " 8, 9,", "done": True, "eval_count": 5,
        "eval_duration": 100_000_000, "prompt_eval_duration": 25_000_000,
    }  # fmt: skip
    got = ollama_smoke(fake.url, model="demo-o", api_key=None, kind="completion")
    ((path, body, auth),) = fake.requests
    assert path == "/api/generate" and auth is None
    assert body == {"model": "demo-o", "prompt": COMPLETION_PROMPT, "raw": True,
                    "stream": False, "options": {"temperature": 0, "num_predict": 8}}  # fmt: skip
    assert (got.kind, got.matched, got.completion_tokens) == ("completion", True, 5)
    assert (got.time_to_first_token_ms, got.tokens_per_s) == (25.0, 50.0)


def test_ollama_chat_proof_uses_its_openai_api(fake: _Fake) -> None:
    fake.answers["/v1/chat/completions"] = {
        "choices": [{"message": {"content": "Hi"}}], "usage": {"completion_tokens": 1}}  # fmt: skip
    got = ollama_smoke(fake.url, model="q", api_key=None, kind="chat")
    assert [p for p, _, _ in fake.requests] == ["/v1/chat/completions"] and got.kind == "chat"


def test_a_server_that_refuses_is_a_smoke_failure(fake: _Fake) -> None:
    with pytest.raises(SmokeTestFailed):  # nothing answers /api/generate here: 404
        ollama_smoke(fake.url, model="q", api_key=None, kind="completion")


def test_the_smoke_key_never_goes_through_an_environment_proxy(
    fake: _Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    import urllib.request

    proxy = _Fake()  # records what a proxy named in http_proxy would be sent
    try:
        monkeypatch.setenv("http_proxy", proxy.url)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.setattr(urllib.request, "_opener", None)  # urlopen would read the env anew
        fake.answers["/v1/completions"] = _completion(" 8, 9", 8)
        llama_server_smoke(fake.url, model="demo", api_key="s3cret", kind="completion")
    finally:
        proxy.server.shutdown()
        proxy.server.server_close()
    assert proxy.requests == [] and fake.requests[0][2] == "Bearer s3cret"
