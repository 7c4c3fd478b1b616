"""The offline provider: a deterministic Pillow preview for any request, at the requested size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from webtoon_assets.bible.models import size_pixels
from webtoon_assets.gateway.providers.base import ProviderError, ProviderResult, ProviderText
from webtoon_assets.gateway.request import GenerationRequest
from webtoon_assets.gateway.submissions import Submission
from webtoon_assets.preview.draw import render_preview


class LocalProvider:
    name = "local"
    concurrency = 1  # Pillow drawing is CPU-bound and quick; threads would only contend

    def generate(self, request: GenerationRequest, dest: Path, key: str = "",
                 submission: Submission | None = None) -> ProviderResult:
        width, height = size_pixels(request.arguments.get("image_size", "square_hd"))
        image = render_preview(request, width, height)
        image.save(dest, format="PNG", optimize=False, compress_level=3)
        return ProviderResult(
            width=width,
            height=height,
            response={"images": [{"width": width, "height": height, "content_type": "image/png"}],
                      "seed": request.arguments.get("seed")},
        )

    def generate_text(self, request: GenerationRequest, key: str = "",
                      submission: Submission | None = None) -> ProviderText:
        """Offline, prose is split by rule, not by a model (see storyboard.prose.split_prose)."""
        from webtoon_assets.storyboard.prose import split_prose

        if not request.context:
            raise ProviderError(f"the offline provider cannot stand in for {request.endpoint}: no context given",
                                retryable=False, billed=False)
        prose = request.arguments["prompt"].split("\n\n", 1)[-1].split("\n", 1)[-1]
        text = split_prose(prose, request.context)
        return ProviderText(text=text, response={"output": text, "usage": {
            "prompt_tokens": len(request.arguments["prompt"]) // 4, "completion_tokens": len(text) // 4}})

    def refetch(self, request: GenerationRequest, record: dict[str, Any], dest: Path) -> bool:
        """The preview is deterministic: drawing it again gives the same file."""
        self.generate(request, dest)
        return True

    def close(self) -> None:
        pass
