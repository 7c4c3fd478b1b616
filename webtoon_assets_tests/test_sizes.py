"""One image-size parser (webtoon_assets.sizes) for the bible, the recipes, the offline provider and
the price rules."""

from __future__ import annotations

import pytest

from webtoon_assets.bible.models import CustomSize
from webtoon_assets.pricing import QuoteError, quote
from webtoon_assets.sizes import ImageSizeError, size_pixels


@pytest.mark.parametrize("size, pixels", [
    ("portrait_4_3", (768, 1024)), ("square_hd", (1024, 1024)), ({"width": 640, "height": 480}, (640, 480)),
    (CustomSize(width=640, height=480), (640, 480)),
])
def test_presets_mappings_and_the_bibles_custom_size(size, pixels):
    assert size_pixels(size) == pixels


@pytest.mark.parametrize("size", ["portrait_5_4", {"width": 640}, None, 512, {"width": "wide", "height": 480}])
def test_anything_else_is_named_not_a_key_error(size):
    with pytest.raises(ImageSizeError, match="image_size: "):
        size_pixels(size)


def test_the_price_rules_report_an_unknown_size_as_unpriceable():
    with pytest.raises(QuoteError, match="unknown preset 'portrait_5_4'"):
        quote("fal-ai/flux-2/flash", {"prompt": "x", "image_size": "portrait_5_4"})
