"""Image sizes as fal's endpoints take them: a named preset ('portrait_4_3') or {width, height}.

The bible validates a model's ``image_size`` with these presets, the recipes and the offline
provider turn it into pixels, and the price rules measure megapixels with it: one parser for all.
"""

from __future__ import annotations

from typing import Any

IMAGE_SIZE_PRESETS: dict[str, tuple[int, int]] = {
    # fal's image_size presets (BRIEF.md), width × height
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}


class ImageSizeError(ValueError):
    """An image size that is neither a known preset nor a width and a height."""


def size_pixels(size: Any) -> tuple[int, int]:
    """(width, height) in pixels of an image size: a preset name, a mapping with ``width`` and
    ``height``, or an object with those attributes (the bible's ``CustomSize``)."""
    if isinstance(size, str):
        if size not in IMAGE_SIZE_PRESETS:
            raise ImageSizeError(f"image_size: unknown preset {size!r}; expected one of {list(IMAGE_SIZE_PRESETS)}")
        return IMAGE_SIZE_PRESETS[size]
    if isinstance(size, dict) and {"width", "height"} <= set(size):
        width, height = size["width"], size["height"]
    elif not isinstance(size, dict) and hasattr(size, "width") and hasattr(size, "height"):
        width, height = size.width, size.height
    else:
        raise ImageSizeError(f"image_size: expected a preset or {{width, height}}, got {size!r}")
    try:
        return int(width), int(height)
    except (TypeError, ValueError):
        raise ImageSizeError(f"image_size: expected whole numbers of pixels, got {size!r}") from None


# Endpoints sized by aspect ratio and a resolution tier (nano-banana, Gemini, Replicate): the tier is
# the long side, about. The platform picks the exact pixels; these stand in for them offline and in
# quotes of megapixel rules (the per-image rules these endpoints use do not read them).
RESOLUTION_LONG_SIDE = {"0.5K": 512, "1K": 1024, "2K": 2048, "4K": 4096}


def ratio_of(aspect: str) -> float:
    """'3:4' -> 0.75 (width / height)."""
    try:
        w, h = (float(x) for x in aspect.split(":"))
        return w / h
    except (AttributeError, ValueError, ZeroDivisionError):
        raise ImageSizeError(f"aspect_ratio: expected 'W:H' such as '3:4', got {aspect!r}") from None


def aspect_pixels(aspect: str, resolution: str = "1K") -> tuple[int, int]:
    """(width, height) of an aspect ratio at a resolution tier, to multiples of 16."""
    if resolution not in RESOLUTION_LONG_SIDE:
        raise ImageSizeError(f"resolution: unknown {resolution!r}; expected one of {list(RESOLUTION_LONG_SIDE)}")
    long_side, r = RESOLUTION_LONG_SIDE[resolution], ratio_of(aspect)
    w, h = (long_side, long_side / r) if r >= 1 else (long_side * r, long_side)
    return max(16, round(w / 16) * 16), max(16, round(h / 16) * 16)


def requested_pixels(arguments: dict[str, Any], default: Any = "landscape_4_3") -> tuple[int, int]:
    """The size a request asks for, however its endpoint takes it: ``image_size`` (a preset or
    {width, height}), or ``aspect_ratio`` with an optional ``resolution`` tier."""
    if "image_size" in arguments:
        return size_pixels(arguments["image_size"])
    if "aspect_ratio" in arguments:
        return aspect_pixels(arguments["aspect_ratio"], arguments.get("resolution") or "1K")
    return size_pixels(default)
