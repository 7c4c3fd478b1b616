"""The provider interface: turn one request into one image file, or raise ProviderError."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
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
    billable_units: Decimal | None = None  # as the provider reported them (fal: x-fal-billable-units)


@dataclass
class ProviderText:
    text: str
    response: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    billed: bool = False


class ProviderError(RuntimeError):
    """One failed attempt. ``retryable``: another attempt may succeed; ``billed``: the provider
    charged for this attempt anyway; ``nsfw``: retry with a new seed."""

    def __init__(self, message: str, *, retryable: bool, billed: bool, request_id: str | None = None,
                 nsfw: bool = False):
        super().__init__(message)
        self.retryable = retryable
        self.billed = billed
        self.request_id = request_id
        self.nsfw = nsfw


class Provider(Protocol):
    name: str
    concurrency: int  # requests it can usefully run at once

    def generate(self, request: GenerationRequest, dest: Path, key: str = "") -> ProviderResult:
        """Write the image for ``request`` to ``dest`` (PNG). ``key`` is the request's store key."""
        ...

    def generate_text(self, request: GenerationRequest, key: str = "") -> ProviderText:
        """Answer a text request (a model's output as text)."""
        ...

    def close(self) -> None: ...
