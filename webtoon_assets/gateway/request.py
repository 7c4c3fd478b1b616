"""What an asset asks the gateway for, and the canonical key that makes a request cacheable."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from webtoon_assets.preview.hints import Figure, PreviewHints  # noqa: F401 - Figure re-exported with the hints

KEY_VERSION = 1


class Reference(BaseModel):
    """A reference image sent with a request; its content hash, not its path, enters the key."""

    model_config = ConfigDict(frozen=True)
    role: str = Field(description="what it is, e.g. 'character:mira', 'background:rain_alley', 'style'")
    path: str
    sha256: str
    width: int | None = None  # sizes price the inputs (most endpoints bill input megapixels)
    height: int | None = None


class Attribution(BaseModel):
    """Who asked: goes to the ledger, never into the key."""

    model_config = ConfigDict(frozen=True)
    series: str
    episode: str
    asset: str
    item: str
    reusable: bool = False  # a one-time artifact shared by episodes: amortised over the season


class Lora(BaseModel):
    """LoRA weights a request is made with (``loras: [{path, scale}]`` on fal): sent as an uploaded
    file's URL; its content hash and scale, not its path or URL, enter the key."""

    model_config = ConfigDict(frozen=True)
    role: str = Field(description="whose weights, e.g. 'lora:mira'")
    path: str
    sha256: str
    scale: float = 1.0


class GenerationRequest(BaseModel):
    model_config = ConfigDict(frozen=True)
    endpoint: str
    arguments: dict[str, Any]
    references: list[Reference] = Field(default_factory=list)
    # A training request's data (a zip of images, sent as ``image_data_url``): not a reference image
    # (never cut to max_references, never priced as input megapixels); its content hash is keyed.
    training_data: Reference | None = None
    loras: list[Lora] = Field(default_factory=list)
    preview: PreviewHints | None = None
    # A text request's answer offline: the asker makes it (a deterministic stand-in for the model, in
    # the model's answer format), and the local provider returns it as it is. It is made from the
    # arguments and ``context``, which the key holds, so it is not keyed itself.
    stand_in: str | None = None
    context: dict[str, Any] | None = None  # what the stand-in was made from beside the arguments (keys local)
    take: int = 1  # a new version of a request whose arguments carry no seed (a text model's answer)
    attribution: Attribution

    def key(self, provider: str) -> str:
        """sha256 of the canonical request: the same request on the same provider is the same image."""
        payload: dict[str, Any] = {
            "v": KEY_VERSION,
            "provider": provider,
            "endpoint": self.endpoint,
            "arguments": self.arguments,
            "references": [[r.role, r.sha256] for r in self.references],
        }
        if provider == "local" and self.preview is not None:
            payload["preview"] = self.preview.model_dump(mode="json")
        if self.take != 1:
            payload["take"] = self.take
        if self.training_data is not None:  # only when present: every other request keeps its key
            payload["training_data"] = self.training_data.sha256
        if self.loras:
            payload["loras"] = [[lo.role, lo.sha256, lo.scale] for lo in self.loras]
        if provider == "local" and self.context is not None:
            payload["context"] = self.context
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()


def stable_seed(*parts: object) -> int:
    """A seed that depends only on what is asked for, so re-runs ask for the same image."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
