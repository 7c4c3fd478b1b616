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
