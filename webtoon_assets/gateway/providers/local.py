"""The offline provider: a deterministic Pillow preview for any request, at the requested size."""

from __future__ import annotations

from pathlib import Path

from webtoon_assets.bible.models import size_pixels
from webtoon_assets.gateway.providers.base import ProviderResult
from webtoon_assets.gateway.request import GenerationRequest
from webtoon_assets.preview.draw import render_preview


class LocalProvider:
    name = "local"
    concurrency = 1  # Pillow drawing is CPU-bound and quick; threads would only contend

    def generate(self, request: GenerationRequest, dest: Path, key: str = "") -> ProviderResult:
        width, height = size_pixels(request.arguments.get("image_size", "square_hd"))
        image = render_preview(request, width, height)
        image.save(dest, format="PNG", optimize=False, compress_level=3)
        return ProviderResult(
            width=width,
            height=height,
            response={"images": [{"width": width, "height": height, "content_type": "image/png"}],
                      "seed": request.arguments.get("seed")},
        )

    def close(self) -> None:
        pass
