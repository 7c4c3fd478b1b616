"""The offline provider: a deterministic Pillow preview for any request, at the requested size."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from webtoon_assets.gateway.providers.base import ProviderError, ProviderFile, ProviderResult, ProviderText
from webtoon_assets.gateway.request import GenerationRequest
from webtoon_assets.gateway.submissions import Submission
from webtoon_assets.png import save_png
from webtoon_assets.preview.draw import render_preview
from webtoon_assets.preview.hints import PreviewHints
from webtoon_assets.sizes import requested_pixels


class LocalProvider:
    name = "local"
    concurrency = 2  # drawing, resizing and PNG encoding let go of the GIL: two previews at once on two cores

    def generate(self, request: GenerationRequest, dest: Path, key: str = "",
                 submission: Submission | None = None) -> ProviderResult:
        width, height = requested_pixels(request.arguments, "square_hd")  # pixels, or a ratio at a tier
        hints = request.preview or PreviewHints.plain(request.endpoint)
        plate = next((r.path for r in request.references if r.role.startswith("background:")), None)
        image = render_preview(hints, width, height, seed=request.arguments.get("seed", 0), backdrop=plate)
        save_png(image, dest, level=3)
        return ProviderResult(
            width=width,
            height=height,
            response={"images": [{"width": width, "height": height, "content_type": "image/png"}],
                      "seed": request.arguments.get("seed")},
        )

    def generate_text(self, request: GenerationRequest, key: str = "",
                      submission: Submission | None = None) -> ProviderText:
        """Offline, the answer is the one the asker made without a model (``request.stand_in``; for
        prose, storyboard.prose.split_prose): this provider never reads what the prompt means."""
        if request.stand_in is None:
            raise ProviderError(f"the offline provider cannot stand in for {request.endpoint}: "
                                "the request carries no stand-in answer", retryable=False, billed=False)
        text = request.stand_in
        return ProviderText(text=text, response={"output": text, "usage": {
            "prompt_tokens": len(request.arguments["prompt"]) // 4, "completion_tokens": len(text) // 4}})

    def generate_file(self, request: GenerationRequest, dest: Path, key: str = "",
                      submission: Submission | None = None) -> ProviderFile:
        """Offline, a training request's result is a small deterministic stand-in file (not weights),
        marked as such in its header and its response; the gateway prices it at the trainer's list price."""
        header = {"stand_in": True, "note": "offline placeholder for a trained LoRA; not usable weights",
                  "endpoint": request.endpoint, "key": key,
                  "training_data": request.training_data.sha256 if request.training_data else None,
                  "arguments": {k: v for k, v in request.arguments.items() if k != "image_data_url"}}
        body = json.dumps(header, sort_keys=True, default=str).encode()
        data = len(body).to_bytes(8, "little") + body + hashlib.sha256(body).digest()  # safetensors-shaped
        dest.write_bytes(data)
        return ProviderFile(response={"diffusers_lora_file": {"file_size": len(data), "stand_in": True}},
                            stand_in=True)

    def refetch(self, request: GenerationRequest, record: dict[str, Any], dest: Path) -> bool:
        """The preview is deterministic: drawing it again gives the same file."""
        self.generate(request, dest)
        return True

    def close(self) -> None:
        pass
