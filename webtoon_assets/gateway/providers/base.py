"""The provider interface: turn one request into one image file, or raise."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from webtoon_assets.gateway.request import GenerationRequest


@dataclass
class ProviderResult:
    width: int
    height: int
    response: dict[str, Any] = field(default_factory=dict)  # what the provider answered, for pricing
    request_id: str | None = None
    billed: bool = False  # True when real money was charged (fal), False offline


class Provider(Protocol):
    name: str
    concurrency: int  # requests it can usefully run at once

    def generate(self, request: GenerationRequest, dest: Path) -> ProviderResult:
        """Write the image for ``request`` to ``dest`` (PNG)."""
        ...
