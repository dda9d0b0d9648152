"""What each bench request asks: a synthetic prompt of about P tokens, or the user's prompts
from a JSONL file (validated line by line), with the sampling settings every request shares."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from deployer.core.errors import InvalidRequest
from deployer.core.untrusted import shown

MAX_PROMPTS_FILE_BYTES = 16 << 20
MAX_PROMPT_LINES = 10_000
MAX_MESSAGES = 256
MAX_CONTENT_CHARS = 512 << 10
MAX_PROMPT_TOKENS = 1_000_000
MAX_OUTPUT_TOKENS = 100_000
ROLES = ("system", "user", "assistant")
SEED = 1234  # every request the same seed, temperature 0: repeatable outputs

# Common one-token English words: a prompt of N of them is about N tokens in most vocabularies.
_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "are",
    "with",
    "as",
    "his",
    "they",
    "be",
    "at",
    "one",
    "have",
    "this",
    "from",
    "or",
    "had",
    "by",
    "but",
    "some",
    "what",
    "there",
    "we",
    "can",
    "out",
    "other",
    "were",
    "all",
    "your",
    "when",
    "up",
    "use",
    "word",
    "how",
    "said",
    "an",
    "each",
    "she",
]

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class RequestShape:
    """Prompt and output lengths, or the user's prompts, cycled through by request number."""

    prompt_tokens: int
    output_tokens: int
    prompts: tuple[tuple[tuple[str, str], ...], ...] = ()  # ((role, content), ...) per prompt
    source: str = "synthetic"  # or the prompts file's name

    def messages(self, index: int) -> Messages:
        """The messages of request number `index`."""
        if self.prompts:
            chosen = self.prompts[index % len(self.prompts)]
            return [{"role": role, "content": content} for role, content in chosen]
        return [{"role": "user", "content": synthetic_prompt(index, self.prompt_tokens)}]

    def body(self, index: int, model: str) -> dict[str, Any]:
        """The /v1/chat/completions body of request number `index`."""
        return {
            "model": model,
            "messages": self.messages(index),
            "max_tokens": self.output_tokens,
            "temperature": 0,
            "seed": SEED,
            "stream": True,
            "stream_options": {"include_usage": True},
            # llama-server (and vLLM): generate all max_tokens, so every answer is full length
            "ignore_eos": True,
            # llama-server: no reuse of an earlier prompt's cache, so each prefill is measured
            "cache_prompt": False,
        }


def synthetic_prompt(index: int, tokens: int) -> str:
    """About `tokens` tokens of words, different from the first word on for each `index`
    (a server's prefix cache cannot skip the prefill)."""
    words = [f"Request {index}:"]
    step = 1 + index % 7
    for i in range(max(0, tokens - 3)):
        words.append(_WORDS[(i * step + index) % len(_WORDS)])
    return " ".join(words)


def check_lengths(prompt_tokens: int, output_tokens: int) -> None:
    """Refuse lengths no server takes."""
    if not 1 <= prompt_tokens <= MAX_PROMPT_TOKENS:
        raise InvalidRequest(f"--prompt-tokens {prompt_tokens} is not in 1..{MAX_PROMPT_TOKENS}")
    if not 1 <= output_tokens <= MAX_OUTPUT_TOKENS:
        raise InvalidRequest(f"--output-tokens {output_tokens} is not in 1..{MAX_OUTPUT_TOKENS}")


def _content(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{where} is {shown(value)}, not text")
    if len(value) > MAX_CONTENT_CHARS:
        raise InvalidRequest(f"{where} holds {len(value)} characters (at most {MAX_CONTENT_CHARS})")
    return value


def _prompt_line(raw: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in ("messages", "prompt"):
        raise InvalidRequest(f'{where} is not {{"messages": [...]}} or {{"prompt": "..."}}')
    if "prompt" in raw:
        return (("user", _content(raw["prompt"], f"{where} prompt")),)
    messages = raw["messages"]
    if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_MESSAGES:
        raise InvalidRequest(f"{where} messages is not a list of 1 to {MAX_MESSAGES} messages")
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or set(msg) != {"role", "content"}:
            raise InvalidRequest(f'{where} message {i} is not {{"role": ..., "content": ...}}')
        if msg["role"] not in ROLES:
            raise InvalidRequest(
                f"{where} message {i} role is {shown(msg['role'])}, not one of {', '.join(ROLES)}"
            )
        out.append((str(msg["role"]), _content(msg["content"], f"{where} message {i} content")))
    return tuple(out)


def parse_prompts(text: str, name: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    """The prompts of a JSONL file's text: one object a line, blank lines skipped."""
    prompts: list[tuple[tuple[str, str], ...]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name} line {number}"
        if len(prompts) >= MAX_PROMPT_LINES:
            raise InvalidRequest(f"{name} has more than {MAX_PROMPT_LINES} prompts")
        try:
            raw = json.loads(line)
        except (ValueError, RecursionError):
            raise InvalidRequest(f"{where} is not JSON") from None
        prompts.append(_prompt_line(raw, where))
    if not prompts:
        raise InvalidRequest(f"{name} holds no prompt", 'Write one {"prompt": "..."} a line.')
    return tuple(prompts)
