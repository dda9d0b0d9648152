"""What one item costs on a target, from what the run measured.

An API target (url=...) is priced per token: the tokens its answers used (the `usage` the
server reported) times its price per 1M input and output tokens. A self-hosted target (a
deployment, or a model deployed for the run) is priced by the hour: the machine's USD/hour
times the time at least one of its requests was in flight, divided by the items answered.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployer.core.eval.targets import TargetSpec

PER_MILLION = 1_000_000


def api_price_for(model_name: str) -> tuple[float, float] | None:
    """USD per 1M (input, output) tokens of a closed API's `model_name`, from deployer's price
    table (prices/*.yaml and the user's <config>/prices/): the row whose `api_models` lists the
    name, or whose id is the name; None when no row does."""
    from deployer.core.fit.api_prices import load_prices

    for row in load_prices().values():
        if model_name == row.id or model_name in row.api_models:
            return row.usd_per_million_input_tokens, row.usd_per_million_output_tokens
    return None


@dataclass(frozen=True)
class Pricing:
    """How a target is priced: per token (API) or per hour (self-hosted); None: unpriced."""

    basis: str  # "tokens" | "hourly" | "none"
    price_in: float | None = None
    price_out: float | None = None
    hourly: float | None = None
    source: str = ""  # where the price came from, for the report


def pricing_for(target: TargetSpec, profile_hourly: float | None) -> Pricing:
    """The target's pricing: its own prices first, then the price table (APIs) or the
    profile's USD/hour (self-hosted)."""
    if target.kind == "url":
        if target.price_in is not None or target.price_out is not None:
            return Pricing("tokens", target.price_in or 0.0, target.price_out or 0.0,
                           source="target price-in/price-out")  # fmt: skip
        listed = api_price_for(target.model or "")
        if listed is not None:
            return Pricing("tokens", listed[0], listed[1], source="price table")
        if target.hourly is not None:
            return Pricing("hourly", hourly=target.hourly, source="target hourly")
        return Pricing("none")
    if target.hourly is not None:
        return Pricing("hourly", hourly=target.hourly, source="target hourly")
    if profile_hourly is not None:
        return Pricing("hourly", hourly=profile_hourly, source="profile price")
    return Pricing("none")


def usd_per_item(
    pricing: Pricing, *, answered: int, tokens_in: int, tokens_out: int, busy_s: float
) -> float | None:
    """USD per answered item under `pricing`; None when unpriced or nothing was answered."""
    if answered <= 0 or pricing.basis == "none":
        return None
    if pricing.basis == "tokens":
        total = tokens_in * (pricing.price_in or 0.0) + tokens_out * (pricing.price_out or 0.0)
        return total / PER_MILLION / answered
    return (pricing.hourly or 0.0) * busy_s / 3600 / answered
