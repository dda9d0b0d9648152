"""What proves a deployment: which kind of smoke test a model gets, and what its answer shows.

A model whose GGUF carries a chat template is proven with one chat completion. A model
without one is most often a base model (the demo, Gemma 3 270M, is one): asked to chat it
answers fragments such as `'.\\n\\n<h2><strong>'`, which prove that tokens came back but not
that they make sense. Such a model gets a plain completion of a prompt whose continuation
can be checked instead: a count, which even a 270M base model continues at temperature 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

SmokeKind = Literal["chat", "completion"]

CHAT_PROMPT = "Say hello in five words."
# A count: every family continues it, base models included; greedy decoding makes it stable.
COMPLETION_PROMPT = "1, 2, 3, 4, 5, 6, 7,"
COMPLETION_EXPECTED = "8"


@dataclass(frozen=True)
class SmokeResult:
    """What the first completion showed."""

    text: str
    completion_tokens: int
    seconds: float
    time_to_first_token_ms: float | None
    tokens_per_s: float | None
    kind: SmokeKind = "chat"
    prompt: str = CHAT_PROMPT
    expected: str | None = None  # completion: the continuation it must start with
    matched: bool | None = None  # completion: whether it did; chat: None (nothing to check)


def smoke_kind(has_chat_template: bool) -> SmokeKind:
    """Chat for a model with a chat template; a checkable plain completion for one without."""
    return "chat" if has_chat_template else "completion"


def continues_as_expected(text: str, expected: str = COMPLETION_EXPECTED) -> bool:
    """Whether `text` starts with `expected` as a whole word (leading whitespace ignored)."""
    return re.match(rf"\s*{re.escape(expected)}(?!\w)", text) is not None


def describe(result: SmokeResult) -> str:
    """One phrase on what the proof showed, for the deploy output."""
    if result.kind == "chat":
        return f"chat answer {result.text!r}"
    verdict = (
        "continued as expected"
        if result.matched
        else f"did not continue as expected (wanted {result.expected!r} next): the server "
        "answers, the model's continuation is unexpected"
    )
    return f"completion of {result.prompt!r}: {result.text!r}, {verdict}"
