"""Pricing: the price book, its rule kinds, and quotes."""

from webtoon_assets.pricing.book import PriceBook, PriceEntry, RetiredEndpoint, UnknownEndpoint, load_pricebook
from webtoon_assets.pricing.quote import Quote, QuoteError, quote

__all__ = ["PriceBook", "PriceEntry", "Quote", "QuoteError", "RetiredEndpoint", "UnknownEndpoint", "load_pricebook",
           "quote"]
