"""The chat client's retries, backoff and answer parsing, against an in-process transport that
stands in for a closed API (rate limits and outages cannot be ordered from a real one)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployer.adapters.chat_client import (
    MAX_ANSWER_BYTES,
    RETRY_AFTER_MAX_S,
    ChatClient,
    backoff_delay,
    parse_retry_after,
)
from deployer.core.eval.flow import Answer, AskFailure, ChatRequest

KEY = "sk-test-5ecret"
CHAT = ChatRequest(None, (("user", "hi"),), 8, 0.0, 0)
PLAIN = ChatRequest("1, 2,", None, 8, 0.0, 0)


def _ok(text: str = "hello", chat: bool = True) -> httpx2.Response:
    choice = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
    usage = {"prompt_tokens": 7, "completion_tokens": 2}
    return httpx2.Response(200, json={"choices": [choice], "usage": usage})


def _client(replies: list[httpx2.Response | Exception], seen: list[httpx2.Request], sleeps: list[float],
            attempts: int = 4) -> ChatClient:  # fmt: skip
    def handle(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        reply = replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    return ChatClient("http://api.test/v1", "m", KEY, max_attempts=attempts, sleep=sleeps.append,
                      transport=httpx2.MockTransport(handle))  # fmt: skip


def test_a_chat_answer_with_usage_and_the_key_as_bearer() -> None:
    seen: list[httpx2.Request] = []
    got = _client([_ok()], seen, []).ask(CHAT)
    assert isinstance(got, Answer) and (got.text, got.tokens_in, got.tokens_out) == ("hello", 7, 2)
    (req,) = seen
    assert req.url.path == "/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    body = json.loads(req.content)
    assert body["temperature"] == 0.0 and body["seed"] == 0 and body["max_tokens"] == 8
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_a_prompt_goes_to_completions() -> None:
    seen: list[httpx2.Request] = []
    got = _client([_ok(" 3", chat=False)], seen, []).ask(PLAIN)
    assert isinstance(got, Answer) and got.text == " 3"
    assert (
        seen[0].url.path == "/v1/completions" and json.loads(seen[0].content)["prompt"] == "1, 2,"
    )


def test_429_honours_retry_after_then_succeeds() -> None:
    sleeps: list[float] = []
    replies: list[httpx2.Response | Exception] = [
        httpx2.Response(429, headers={"Retry-After": "3"}), httpx2.Response(503), _ok(),
    ]  # fmt: skip
    got = _client(replies, [], sleeps).ask(CHAT)
    assert isinstance(got, Answer) and got.attempts == 3
    assert sleeps[0] == 3.0 and 0 <= sleeps[1] <= 1.0  # Retry-After, then jitter over 0.5 * 2


def test_5xx_gives_up_after_the_attempts_and_says_so() -> None:
    sleeps: list[float] = []
    got = _client([httpx2.Response(500, text="boom")] * 3, [], sleeps, attempts=3).ask(CHAT)
    assert isinstance(got, AskFailure) and got.kind == "http 500" and got.attempts == 3
    assert "after 3 attempts" in got.detail and len(sleeps) == 2


def test_a_4xx_is_not_retried_and_the_key_is_cut_from_what_the_server_echoes() -> None:
    seen: list[httpx2.Request] = []
    echo = httpx2.Response(401, text=f"invalid key {KEY}")
    got = _client([echo], seen, []).ask(CHAT)
    assert isinstance(got, AskFailure) and got.kind == "http 401" and len(seen) == 1
    assert KEY not in got.detail and "***" in got.detail


def test_connection_errors_and_timeouts_are_retried() -> None:
    replies: list[httpx2.Response | Exception] = [
        httpx2.ConnectError("refused"), httpx2.ReadTimeout("slow"), _ok(),
    ]  # fmt: skip
    got = _client(replies, [], []).ask(CHAT)
    assert isinstance(got, Answer) and got.attempts == 3


@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        (httpx2.Response(200, text="<html>"), "not an OpenAI-style completion"),
        (httpx2.Response(200, json={"choices": []}), "not an OpenAI-style completion"),
        (httpx2.Response(200, json={"choices": [{"message": {"content": 5}}]}), "not text"),
        (httpx2.Response(200, content=b"x" * (MAX_ANSWER_BYTES + 10)), "larger than"),
    ],
)
def test_bad_answers_are_failures_not_crashes(reply: httpx2.Response, detail: str) -> None:
    got = _client([reply], [], []).ask(CHAT)
    assert isinstance(got, AskFailure) and got.kind == "bad answer" and detail in got.detail


def test_usage_that_is_not_a_count_is_ignored() -> None:
    reply = httpx2.Response(200, json={"choices": [{"message": {"content": "x"}}],
                                       "usage": {"prompt_tokens": -1, "completion_tokens": True}})  # fmt: skip
    got = _client([reply], [], []).ask(CHAT)
    assert isinstance(got, Answer) and (got.tokens_in, got.tokens_out) == (None, None)


@given(st.integers(1, 30), st.floats(0, 1))
def test_backoff_is_full_jitter_under_the_cap(attempt: int, r: float) -> None:
    rand: Callable[[], float] = lambda: r  # noqa: E731
    delay = backoff_delay(attempt, None, base_s=0.5, cap_s=20.0, rand=rand)
    assert 0 <= delay <= min(20.0, 0.5 * 2 ** (attempt - 1))


@given(st.floats(-1e6, 1e9))
def test_retry_after_is_capped(value: float) -> None:
    assert 0 <= backoff_delay(1, value, base_s=1, cap_s=1) <= RETRY_AFTER_MAX_S


def test_parse_retry_after() -> None:
    assert parse_retry_after("7", 0) == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", 1445412480.0) == pytest.approx(10.0)
    assert parse_retry_after("soon", 0) is None and parse_retry_after(None, 0) is None
    assert parse_retry_after("9" * 400, 0) == 999999.0  # bounded digits, then capped by backoff


def test_a_retry_after_that_is_no_ascii_number_is_ignored_not_a_crash() -> None:
    # Header values arrive as latin-1: "²" is a digit to str.isdigit() but not to float().
    assert parse_retry_after("\xb2", 0) is None and parse_retry_after("٣", 0) is None
    sleeps: list[float] = []
    odd = httpx2.Response(503, headers=[(b"Retry-After", b"\xb2")])
    got = _client([odd, _ok()], [], sleeps).ask(CHAT)
    assert isinstance(got, Answer) and got.attempts == 2 and 0 <= sleeps[0] <= 0.5


def test_a_server_that_trickles_its_answer_is_cut_off_at_the_timeout() -> None:
    # Every read arrives well inside the read timeout, but the whole answer would take 2 s.
    def trickle() -> Iterator[bytes]:
        for _ in range(40):
            time.sleep(0.05)
            yield b" "

    def handle(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=trickle())

    client = ChatClient("http://api.test/v1", "m", None, timeout_s=0.3, max_attempts=1,
                        transport=httpx2.MockTransport(handle))  # fmt: skip
    t0 = time.monotonic()
    got = client.ask(CHAT)
    assert isinstance(got, AskFailure) and got.kind == "timeout", got
    assert "0.3 s" in got.detail and time.monotonic() - t0 < 1.0
