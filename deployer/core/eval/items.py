"""The data file: one JSON object a line, each a question (`prompt` or chat `messages`) and the
scorers that say what a right answer is (docs/eval.md). Parsed as hostile: bounded line length
and count, unknown keys refused, every scorer validated, one error naming file:line."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from deployer.core.datafiles import field_path
from deployer.core.errors import InvalidDataFile
from deployer.core.eval.scorers import Judge, Scorer

MAX_FILE_BYTES = 64 << 20
MAX_LINE_CHARS = 256 * 1024
MAX_ITEMS = 10_000
MAX_MESSAGES = 64
MAX_CONTENT_CHARS = 64 * 1024
MAX_SCORERS = 16
MAX_TOKENS_LIMIT = 32_768
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Message(_Strict):
    """One chat turn."""

    role: Literal["system", "user", "assistant"]
    content: Annotated[str, Field(max_length=MAX_CONTENT_CHARS)]


class EvalItem(_Strict):
    """One question and what counts as right."""

    id: Annotated[str, Field(pattern=ID_RE.pattern)] = ""
    prompt: Annotated[str | None, Field(min_length=1, max_length=MAX_CONTENT_CHARS)] = None
    messages: Annotated[list[Message] | None, Field(min_length=1, max_length=MAX_MESSAGES)] = None
    expect: Annotated[list[Scorer], Field(min_length=1, max_length=MAX_SCORERS)]
    max_tokens: Annotated[int | None, Field(ge=1, le=MAX_TOKENS_LIMIT)] = None
    _line: int = PrivateAttr(default=0)

    @model_validator(mode="after")
    def _one_question(self) -> EvalItem:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' (plain text) or 'messages' (chat)")
        return self

    @property
    def line(self) -> int:
        """The item's line in its data file."""
        return self._line

    @property
    def question(self) -> str:
        """The question as text (what a judge reads)."""
        if self.prompt is not None:
            return self.prompt
        assert self.messages is not None
        return "\n".join(f"{m.role}: {m.content}" for m in self.messages)

    @property
    def has_judge(self) -> bool:
        """Whether a judge model scores this item."""
        return any(isinstance(s, Judge) for s in self.expect)


@dataclass(frozen=True)
class EvalData:
    """A validated data file."""

    source: str
    sha256: str
    items: tuple[EvalItem, ...]

    @property
    def needs_judge(self) -> bool:
        """Whether any item has a judge scorer."""
        return any(item.has_judge for item in self.items)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _one_item(text: str, source: str, line: int) -> EvalItem:
    if len(text) > MAX_LINE_CHARS:
        raise InvalidDataFile(source, line, f"line longer than {MAX_LINE_CHARS} characters")
    try:
        raw = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise InvalidDataFile(source, line, "JSON nested too deep") from None
    except ValueError as exc:
        raise InvalidDataFile(source, line, f"not JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise InvalidDataFile(source, line, "expected a JSON object {...} on each line")
    raw.setdefault("id", f"line-{line}")
    try:
        item = EvalItem.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        msg = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        elif first["type"] == "union_tag_invalid":
            msg = "unknown scorer type; use exact, contains, regex, number, json_schema or judge"
        where = field_path(tuple(first["loc"]))
        raise InvalidDataFile(source, line, f"{where}: {msg}") from None
    except RecursionError:
        raise InvalidDataFile(source, line, "nested too deep") from None
    item._line = line
    return item


def parse_items(text: str, source: str, sha256: str) -> EvalData:
    """Every item in a data file's text; InvalidDataFile (file:line: problem) at the first bad
    one. Blank lines are skipped; ids must be unique."""
    if len(text) > MAX_FILE_BYTES:
        raise InvalidDataFile(source, None, f"larger than {MAX_FILE_BYTES} bytes")
    items: list[EvalItem] = []
    seen: dict[str, int] = {}
    for number, line_text in enumerate(text.split("\n"), start=1):
        if not line_text.strip():
            continue
        if len(items) >= MAX_ITEMS:
            raise InvalidDataFile(source, number, f"more than {MAX_ITEMS} items")
        item = _one_item(line_text, source, number)
        if item.id in seen:
            raise InvalidDataFile(source, number, f"id {item.id!r} is also on line {seen[item.id]}")
        seen[item.id] = number
        items.append(item)
    if not items:
        raise InvalidDataFile(source, None, "no items: one JSON object a line")
    return EvalData(source, sha256, tuple(items))
