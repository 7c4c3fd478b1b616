"""Quotes: what a request costs at list price, from the price book."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from webtoon_assets.pricing.book import PriceBook, load_pricebook
from webtoon_assets.pricing.rules import Unpriceable


@dataclass(frozen=True)
class Quote:
    endpoint: str
    platform: str
    usd: Decimal
    credits: Decimal
    units: Decimal
    unit: str
    breakdown: list[str]
    megapixels: Decimal | None = None
    images: int | None = None
    seconds: Decimal | None = None

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
    return Quote(
        endpoint=endpoint_id, platform=entry.platform, usd=priced.usd,
        credits=priced.usd * book.credits_per_usd, units=priced.units, unit=priced.unit,
        breakdown=[*priced.breakdown, f"= ${priced.usd} ({priced.usd * book.credits_per_usd} credits)"],
        megapixels=priced.megapixels, images=priced.images, seconds=priced.seconds,
    )
