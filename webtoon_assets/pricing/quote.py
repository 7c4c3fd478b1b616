"""Quotes: what a request costs at list price, from the price book."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from webtoon_assets.pricing.book import PriceBook, load_pricebook
from webtoon_assets.pricing.rules import Priced, Unpriceable


@dataclass(frozen=True, kw_only=True)
class Quote(Priced):
    """A priced request: what the rule measured, the price, and in credits."""

    endpoint: str
    platform: str
    credits: Decimal

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in asdict(self).items()}


class QuoteError(ValueError):
    pass


def quote(endpoint_id: str, request: dict[str, Any], response: dict[str, Any] | None = None,
          book: PriceBook | None = None) -> Quote:
    """Price one request (and its response, when given: actual sizes, counts, durations, usage).

    Raises UnknownEndpoint for an endpoint not in the book and QuoteError when the rule cannot
    price the request; never returns a silent $0."""
    book = book or load_pricebook()
    entry = book.entry(endpoint_id)
    try:
        priced = entry.price.price(request, response)
    except Unpriceable as e:
        raise QuoteError(f"cannot price {endpoint_id} ({entry.price.rule}): {e}") from e
    credits = priced.usd * book.credits_per_usd
    return Quote(**{**asdict(priced), "breakdown": [*priced.breakdown, f"= ${priced.usd} ({credits} credits)"]},
                 endpoint=endpoint_id, platform=entry.platform, credits=credits)
