"""Gemini image models (Gemini 3 Pro Image) through the Gemini API's ``generateContent``.

``POST {base}/v1beta/models/{model}:generateContent`` (header ``x-goog-api-key``) with the prompt
as a text part followed by the references as ``inline_data`` parts, and
``generationConfig {responseModalities: ["IMAGE"], seed, imageConfig {aspectRatio, imageSize}}``.
The answer carries the image inline (base64 ``inlineData``) and ``usageMetadata``; Gemini 3 Pro
Image may send interim "thought" images first, and the last non-thought image is the result.

Synchronous: there is no request to resume. The intent is journalled before sending; when the
connection is lost or times out after the body was sent, the outcome is unknown (Google may
have generated and billed it): reported as ``unknown``, never sent again. A blocked prompt
(``promptFeedback.blockReason``) or a safety finish with no image is ``nsfw`` and not billed.
Price: $0.134 an image at 1K/2K, $0.24 at 4K (the price book's quote is the bill).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from pydantic import Field

from webtoon_assets.gateway.providers.base import ProviderError, ProviderResult
from webtoon_assets.gateway.providers.http import HttpProvider, PlatformSettings, reference_b64, reference_mime
from webtoon_assets.gateway.request import GenerationRequest
from webtoon_assets.gateway.submissions import Submission

BLOCKED_FINISH = {"SAFETY", "PROHIBITED_CONTENT", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "BLOCKLIST", "SPII"}
MAX_REFERENCES = 14  # Gemini 3 Pro Image reads up to 14 reference images


class GeminiSettings(PlatformSettings):
    platform: ClassVar[str] = "gemini"
    base_url: str = "https://generativelanguage.googleapis.com"
    concurrency: int = Field(4, ge=1, le=64)
    timeout_seconds: float = Field(180, gt=0, description="the whole synchronous call; a 4K image can take minutes")


class GeminiProvider(HttpProvider):
    name = "gemini"
    key_env = "GEMINI_API_KEY"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-goog-api-key": key}

    def _generate(self, request: GenerationRequest, dest: Path, submission: Submission) -> ProviderResult:
        if not request.endpoint.startswith("gemini/"):
            raise ProviderError(f"gemini has no endpoint {request.endpoint!r}", retryable=False, billed=False)
        model = request.endpoint.removeprefix("gemini/")
        body = self._body(request)
        submission.submitting(request.endpoint, request.arguments.get("seed"))
        _, data = self._submit(f"{self.base_url}/v1beta/models/{quote(model)}:generateContent", body,
                               request.endpoint, timeout=self.settings.timeout_seconds)
        if not isinstance(data, dict):
            raise ProviderError(f"gemini answered {request.endpoint} with no JSON object: outcome unknown until "
                                "`webtoon reconcile`", retryable=False, billed=False, unknown=True)
        rid = data.get("responseId")
        seed = request.arguments.get("seed")
        blocked = (data.get("promptFeedback") or {}).get("blockReason")
        if blocked:
            raise ProviderError(f"gemini blocked the prompt ({blocked}; seed {seed}): not billed", retryable=True,
                                billed=False, request_id=rid, nsfw=True)
        candidate = (data.get("candidates") or [{}])[0] or {}
        finish = candidate.get("finishReason")
        image = _final_image(candidate)
        if image is None:
            if finish in BLOCKED_FINISH:
                raise ProviderError(f"gemini withheld the image ({finish}; seed {seed}): not billed", retryable=True,
                                    billed=False, request_id=rid, nsfw=True)
            raise ProviderError(f"gemini returned no image for {request.endpoint} (finishReason {finish})",
                                retryable=True, billed=False, request_id=rid)
        width, height = self._decode_image(image.get("data"), dest, rid)
        response = {"responseId": rid, "modelVersion": data.get("modelVersion"), "finishReason": finish,
                    "usageMetadata": data.get("usageMetadata"),
                    "images": [{"width": width, "height": height, "content_type": "image/png"}]}
        return ProviderResult(width=width, height=height, response=response, request_id=rid, billed=True)

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        args = dict(request.arguments)
        prompt = args.pop("prompt")
        config: dict[str, Any] = {"responseModalities": ["IMAGE"]}
        if "seed" in args:
            config["seed"] = args.pop("seed")
        image_config = {}
        if "aspect_ratio" in args:
            image_config["aspectRatio"] = args.pop("aspect_ratio")
        if "resolution" in args:
            image_config["imageSize"] = args.pop("resolution")
        if image_config:
            config["imageConfig"] = image_config
        config.update(args)  # the endpoint's own generationConfig fields (temperature, ...)
        parts: list[dict[str, Any]] = [{"text": prompt}]
        parts += [{"inline_data": {"mime_type": reference_mime(r), "data": reference_b64(r)}}
                  for r in request.references[:MAX_REFERENCES]]
        return {"contents": [{"role": "user", "parts": parts}], "generationConfig": config}


def _final_image(candidate: dict[str, Any]) -> dict[str, Any] | None:
    """The last image part that is not a "thought" (an interim draft)."""
    parts = (candidate.get("content") or {}).get("parts") or []
    found = None
    for part in parts:
        blob = part.get("inlineData") or part.get("inline_data")
        if isinstance(blob, dict) and not part.get("thought"):
            found = blob
    return found
