"""Pricing: the price book, its rule kinds, and quotes."""

from webtoon_assets.pricing.book import PriceBook, PriceEntry, UnknownEndpoint, load_pricebook
from webtoon_assets.pricing.quote import Quote, QuoteError, quote

__all__ = ["PriceBook", "PriceEntry", "Quote", "QuoteError", "UnknownEndpoint", "load_pricebook", "quote"]
