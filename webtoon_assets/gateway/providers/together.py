"""Together AI's image API: FLUX.1 [schnell] on its free tier.

``POST {base}/v1/images/generations`` (``Authorization: Bearer``) with
``{model, prompt, width, height, steps, n: 1, seed, response_format: "b64_json"}``; the image
returns inline at ``data[0].b64_json``. Synchronous, like Gemini: the intent is journalled before
sending, a lost answer is ``unknown`` and never resent. The free tier is rate-limited: a 429
(with ``Retry-After``) took nothing and is sent again after the pause it asks for, so the
provider runs one request at a time by default. Free: the price book's quote is $0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from webtoon_assets.gateway.providers.base import ProviderError, ProviderResult
from webtoon_assets.gateway.providers.http import HttpProvider, PlatformSettings
from webtoon_assets.gateway.request import GenerationRequest
from webtoon_assets.gateway.submissions import Submission
from webtoon_assets.sizes import size_pixels

MODELS = {"flux-1-schnell-free": "black-forest-labs/FLUX.1-schnell-Free"}
DEFAULT_STEPS = 4


class TogetherSettings(PlatformSettings):
    platform: ClassVar[str] = "together"
    base_url: str = "https://api.together.xyz"
    concurrency: int = Field(1, ge=1, le=64, description="the free tier is rate-limited: one at a time")
    timeout_seconds: float = Field(120, gt=0, description="the whole synchronous call")


class TogetherProvider(HttpProvider):
    name = "together"
    key_env = "TOGETHER_API_KEY"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def _generate(self, request: GenerationRequest, dest: Path, submission: Submission) -> ProviderResult:
        model = _model(request.endpoint)
        body = self._body(model, request)
        submission.submitting(request.endpoint, request.arguments.get("seed"))
        _, data = self._submit(f"{self.base_url}/v1/images/generations", body, request.endpoint,
                               timeout=self.settings.timeout_seconds)
        rid = data.get("id") if isinstance(data, dict) else None
        items = data.get("data") if isinstance(data, dict) else None
        first = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else None
        if first is None:
            raise ProviderError(f"together returned no image for {request.endpoint}", retryable=True, billed=True,
                                request_id=rid)
        if first.get("b64_json"):
            width, height = self._decode_image(first["b64_json"], dest, rid)
        elif first.get("url"):
            width, height = self._fetch_image(first["url"], dest, str(rid))
        else:
            raise ProviderError(f"together returned no image for {request.endpoint}", retryable=True, billed=True,
                                request_id=rid)
        response = {"id": rid, "model": data.get("model"),
                    "images": [{"width": width, "height": height, "content_type": "image/png"}]}
        if first.get("timings"):
            response["timings"] = first["timings"]
        return ProviderResult(width=width, height=height, response=response, request_id=rid, billed=True)

    def _body(self, model: str, request: GenerationRequest) -> dict[str, Any]:
        args = dict(request.arguments)
        body: dict[str, Any] = {"model": model, "prompt": args.pop("prompt")}
        if "image_size" in args:
            body["width"], body["height"] = size_pixels(args.pop("image_size"))
        body["steps"] = args.pop("steps", DEFAULT_STEPS)
        body["n"] = 1
        if "seed" in args:
            body["seed"] = args.pop("seed")
        body["response_format"] = "b64_json"
        body.update({k: v for k, v in args.items() if k not in ("n", "response_format")})  # the endpoint's own
        return body  # FLUX.1 [schnell] reads no reference images: request.references are not sent


def _model(endpoint: str) -> str:
    name = endpoint.removeprefix("together/")
    if endpoint.startswith("together/") and name in MODELS:
        return MODELS[name]
    if endpoint.startswith("together/") and "/" in name:  # a Together model id given as it is
        return name
    raise ProviderError(f"together has no endpoint {endpoint!r}; expected one of "
                        f"{['together/' + m for m in MODELS]} or together/<org>/<model>", retryable=False,
                        billed=False)
