"""Closed-API prices as data: prices/*.yaml, user rows in <config>/prices/*.yaml (same id
overrides), read through the DataSource seam; what a request costs there and when the prices
are old."""

from __future__ import annotations

import difflib
from datetime import date
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from deployer.core.data_source import DataSource, data_source
from deployer.core.datafiles import Id, Line, Prose, Token, Url, parse_by_id
from deployer.core.errors import InvalidRequest
from deployer.core.untrusted import shown

# Far above any published per-token price: a bigger number is a typo (or a unit mix-up).
MAX_USD_PER_MILLION_TOKENS = 10_000.0
# Prices older than this are shown as "old (as of YYYY-MM)": API prices change a few times a year.
OLD_AFTER_DAYS = 180


def _as_of(value: str) -> str:
    parse_as_of(value)
    return value


def parse_as_of(value: str) -> date:
    """'YYYY-MM' (the first of the month) or 'YYYY-MM-DD' as a date; ValueError otherwise."""
    parts = value.split("-")
    well_formed = (
        len(parts) in (2, 3)
        and all(p.isascii() and p.isdigit() for p in parts)
        and len(parts[0]) == 4
        and all(len(p) == 2 for p in parts[1:])
    )
    if not well_formed:
        raise ValueError(f"{shown(value)} is not a date YYYY-MM or YYYY-MM-DD")
    year, month = int(parts[0]), int(parts[1])
    day = int(parts[2]) if len(parts) == 3 else 1
    if year < 2000:
        raise ValueError(f"{shown(value)} is before any LLM API price")
    return date(year, month, day)  # raises ValueError for month 13 or day 45


AsOf = Annotated[str, AfterValidator(_as_of)]


class ApiPrice(BaseModel):
    """One closed API's list price per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: Id
    provider: Line
    model: Line
    usd_per_million_input_tokens: float = Field(ge=0, le=MAX_USD_PER_MILLION_TOKENS)
    usd_per_million_output_tokens: float = Field(ge=0, le=MAX_USD_PER_MILLION_TOKENS)
    source: Url
    as_of: AsOf = Field(description="when the price was read: YYYY-MM or YYYY-MM-DD")
    notes: Prose = ""
    api_models: list[Token] = Field(
        default_factory=list,
        max_length=64,
        description="model names the API takes for this row (what `eval --target url=...,model=` "
        "sends), e.g. gpt-4o-mini, gpt-4o-mini-2024-07-18",
    )

    def usd_per_request(self, prompt_tokens: int, output_tokens: int) -> float:
        """Dollars for one request of `prompt_tokens` in and `output_tokens` out."""
        return (
            prompt_tokens * self.usd_per_million_input_tokens
            + output_tokens * self.usd_per_million_output_tokens
        ) / 1e6

    def is_old(self, today: date, max_age_days: int = OLD_AFTER_DAYS) -> bool:
        """Whether the price was read more than `max_age_days` before `today`."""
        return (today - parse_as_of(self.as_of)).days > max_age_days

    def as_of_month(self) -> str:
        """YYYY-MM of as_of, for the 'old (as of YYYY-MM)' flag."""
        return self.as_of[:7]


def load_prices(source: DataSource | None = None) -> dict[str, ApiPrice]:
    """Every price row: shipped ones, then the user's (same id overrides)."""
    texts = (source if source is not None else data_source()).yaml_texts("prices")
    return parse_by_id(texts, ApiPrice)


def select_prices(prices: dict[str, ApiPrice], ids: list[str] | None) -> list[ApiPrice]:
    """The rows `ids` names (all, sorted by id, when none); an unknown id is refused."""
    if not ids:
        return [prices[k] for k in sorted(prices)]
    picked = []
    for wanted in ids:
        if wanted not in prices:
            close = difflib.get_close_matches(wanted, list(prices), n=3, cutoff=0.4)
            hint = f"Did you mean {', '.join(close)}? " if close else ""
            raise InvalidRequest(
                f"no API price row '{wanted}'",
                f"{hint}Known: {', '.join(sorted(prices)) or 'none'}; add your own in "
                "<config>/prices/ID.yaml.",
            )
        if prices[wanted] not in picked:
            picked.append(prices[wanted])
    return picked
