"""One canonical request (prompt, size, seed, references) fitted to what an endpoint takes.

Recipes ask for an image the same way whatever the model: a size as fal's ``image_size`` and the
references in priority order. Each price-book entry says, as data (``request:``), how its endpoint
differs: sized by ``aspect_ratio`` (and a ``resolution`` tier) rather than pixels, sides within
bounds, multiples of 16 under a megapixel cap, the first or the last references read, defaults such
as PNG output. The gateway fits every request before it keys, quotes and sends it, so the size sent
is the size priced and the size checked on the result, and the references priced are those sent.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any, Literal, Sequence, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from webtoon_assets.sizes import RESOLUTION_LONG_SIDE, ratio_of, size_pixels

ASPECT_RATIOS = ["21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16"]

Ref = TypeVar("Ref")


class RequestShape(BaseModel):
    """How an endpoint takes the canonical request; the default is fal's FLUX shape (no change)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    size: Literal["image_size", "aspect_ratio"] = Field(
        "image_size", description="image_size: pixels (a preset or {width, height}); aspect_ratio: a ratio "
                                  "from aspect_ratios, and a tier from resolutions when listed")
    aspect_ratios: list[str] = Field(default_factory=lambda: list(ASPECT_RATIOS))
    resolutions: list[str] = Field(default_factory=list, description="tiers sent as `resolution` (none: not sent)")
    min_side: int | None = Field(None, ge=1, description="both sides at least this (scaled up, aspect kept)")
    max_side: int | None = Field(None, ge=1, description="no side above this")
    multiple_of: int | None = Field(None, ge=1, description="sides rounded to a multiple of this")
    max_mp: Decimal | None = Field(None, gt=0, description="at most this many megapixels (10⁶ px; scaled down)")
    references: Literal["first", "last"] = Field("first", description="which references the endpoint reads "
                                                                      "when given more than its max")
    defaults: dict[str, Any] = Field(default_factory=dict, description="arguments sent unless the series sets them")

    @property
    def is_identity(self) -> bool:
        return self == RequestShape()


def nearest_ratio(width: int, height: int, choices: Sequence[str]) -> str:
    """The listed ratio closest to width:height (on a log scale, so 2:1 and 1:2 are as far from 1:1)."""
    target = math.log(width / height)
    return min(choices, key=lambda c: abs(math.log(ratio_of(c)) - target))


def resolution_tier(long_side: int, tiers: Sequence[str]) -> str:
    """The smallest listed tier whose long side covers ``long_side``, else the largest."""
    known = sorted((t for t in tiers if t in RESOLUTION_LONG_SIDE), key=RESOLUTION_LONG_SIDE.__getitem__)
    if not known:
        return tiers[0]
    return next((t for t in known if RESOLUTION_LONG_SIDE[t] >= long_side), known[-1])


def bounded(width: int, height: int, shape: RequestShape) -> tuple[int, int]:
    """Pixels within the shape's bounds, aspect kept where the bounds allow it."""
    w, h = float(width), float(height)
    if shape.min_side and min(w, h) < shape.min_side:
        w, h = w * shape.min_side / min(w, h), h * shape.min_side / min(w, h)
    if shape.max_side and max(w, h) > shape.max_side:
        w, h = w * shape.max_side / max(w, h), h * shape.max_side / max(w, h)
    if shape.min_side and min(w, h) < shape.min_side:  # an aspect too extreme for both bounds: the sides
        w, h = max(w, shape.min_side), max(h, shape.min_side)  # must fit, the aspect gives way
    if shape.max_mp and w * h > float(shape.max_mp) * 1_000_000:
        f = math.sqrt(float(shape.max_mp) * 1_000_000 / (w * h))
        w, h = w * f, h * f
    if shape.multiple_of:
        m = shape.multiple_of
        # down within a cap (never over it), else to the nearest multiple
        fit = math.floor if (shape.max_mp or shape.max_side) else round
        w, h = max(m, fit(w / m) * m), max(m, fit(h / m) * m)
        if shape.min_side:
            w, h = max(w, math.ceil(shape.min_side / m) * m), max(h, math.ceil(shape.min_side / m) * m)
    else:
        w, h = math.ceil(w - 1e-9), math.ceil(h - 1e-9)
        if shape.max_side:
            w, h = min(w, shape.max_side), min(h, shape.max_side)
    return int(w), int(h)


def fit_request(shape: RequestShape, max_references: int, arguments: dict[str, Any],
                references: Sequence[Ref]) -> tuple[dict[str, Any], list[Ref]]:
    """The arguments and references to send to an endpoint of ``shape`` that reads at most
    ``max_references`` references. The series' own arguments win over the shape's defaults."""
    args = {**shape.defaults, **arguments}
    if "image_size" in args:
        width, height = size_pixels(args["image_size"])
        if shape.size == "aspect_ratio":
            del args["image_size"]
            args.setdefault("aspect_ratio", nearest_ratio(width, height, shape.aspect_ratios))
            if shape.resolutions:
                args.setdefault("resolution", resolution_tier(max(width, height), shape.resolutions))
        elif (fitted := bounded(width, height, shape)) != (width, height):
            args["image_size"] = {"width": fitted[0], "height": fitted[1]}
    refs = list(references)
    if len(refs) > max_references:
        refs = refs[len(refs) - max_references:] if shape.references == "last" else refs[:max_references]
    return args, refs
