"""Re-price the season's actual usage on every image model in the price book."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Sequence

from webtoon_assets.compose.pack import board_size
from webtoon_assets.ledger import LedgerRow
from webtoon_assets.pricing import PriceBook, PriceEntry, QuoteError, quote


@dataclass(frozen=True)
class Usage:
    """What a generation's price depends on, and how many distinct generated requests had exactly
    that (the cost tables group a season's usage in DuckDB and price each group once)."""

    width: int
    height: int
    images: int | None
    inputs: tuple[tuple[int, int], ...]
    reusable: bool
    count: int = 1


def _usage_request(row: LedgerRow | Usage, entry: PriceEntry, packing: str = "none") -> dict[str, Any]:
    """The usage as this endpoint would have been asked for it (its size shape, the references it
    reads); with ``packing`` "board", its references packed into one image first."""
    refs = list(row.inputs)
    if packing == "board" and len(refs) > 1:
        refs = [board_size(refs)]  # one image, whatever the endpoint's limit on their number
    req, inputs = entry.fit({"image_size": {"width": row.width, "height": row.height}, "num_images": row.images or 1},
                            refs)
    if inputs:
        req["image_urls"] = [f"ref{i}" for i in range(len(inputs))]
        req["input_image_sizes"] = [{"width": w, "height": h} for w, h in inputs]
    return req


def platform_whatif(book: PriceBook, usage: Sequence[LedgerRow | Usage],
                    quotes: dict[tuple, Decimal | None] | None = None, packing: str = "none") -> list[dict[str, Any]]:
    """One row per (platform, model): the cost of ``usage`` (distinct generated requests of one
    series on one provider, as rows or as groups of alike requests with their ``count``) had every
    generation been made there. A generation with reference images goes to the model's endpoint
    that takes references, else to its text-to-image one. A group is quoted once and counts
    ``count`` times (exact: Decimal), so grouping never changes a total. ``quotes``: the quotes
    already made with this ``book`` (endpoint and request -> USD, None if it cannot be quoted),
    shared by calls for other series and providers; it is added to. ``packing`` "board": each
    generation's references as one packed image (what `pack_references: board` would have billed;
    a packed board is read whole, so no reference is dropped)."""
    quotes = {} if quotes is None else quotes
    models: dict[tuple[str, str], list[PriceEntry]] = defaultdict(list)
    for e in book.entries:
        if e.kind == "image" and e.retired is None:
            models[(e.platform, e.model)].append(e)
    out = []
    for (platform, model), entries in models.items():
        text = next((e for e in entries if e.max_references == 0), None)
        edit = max((e for e in entries if e.max_references > 0), key=lambda e: e.max_references, default=None)
        total = one_time = Decimal(0)
        dropped_refs = 0
        for row in usage:
            n = row.count if isinstance(row, Usage) else 1
            entry = edit if (row.inputs and edit) or text is None else text
            if packing == "none" or len(row.inputs) <= 1 or not entry.max_references:
                dropped_refs += max(0, len(row.inputs) - entry.max_references) * n
            request = _usage_request(row, entry, packing)
            key = (entry.endpoint, json.dumps(request, sort_keys=True))
            if key not in quotes:
                try:
                    quotes[key] = quote(entry.endpoint, request, book=book).usd
                except QuoteError:
                    quotes[key] = None
            if quotes[key] is None:
                continue
            usd = quotes[key] * n
            total += usd
            if row.reusable:
                one_time += usd
        out.append({"platform": platform, "model": model,
                    "endpoints": ", ".join(e.endpoint for e in entries),
                    "max_references": max(e.max_references for e in entries),
                    "season_usd": total, "one_time_usd": one_time, "references_dropped": dropped_refs,
                    "packing": packing})
    return out
