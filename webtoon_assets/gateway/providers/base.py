"""The provider interface: turn one request into one image file, or raise ProviderError."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from webtoon_assets.gateway.request import GenerationRequest
from webtoon_assets.gateway.submissions import Submission


@dataclass
class ProviderResult:
    width: int
    height: int
    response: dict[str, Any] = field(default_factory=dict)  # what the provider answered, for pricing
    request_id: str | None = None
    billed: bool = False  # True when real money was charged (fal), False offline
    billable_units: Decimal | None = None  # as the provider reported them (fal: x-fal-billable-units)
    resumed: bool = False  # the result of a request accepted by an earlier attempt or run
    # What the platform itself said this request cost (BFL's ``cost``, in dollars): when given, it is
    # what the ledger bills; the price book's quote stays the row's list price, and reconcile compares.
    billed_usd: Decimal | None = None


@dataclass
class ProviderText:
    text: str
    response: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    billed: bool = False
    resumed: bool = False


@dataclass
class ProviderFile:
    """A file result (a trained LoRA's weights), written to the gateway's staging path."""

    response: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    billed: bool = False
    billable_units: Decimal | None = None
    resumed: bool = False
    stand_in: bool = False  # offline: a deterministic placeholder, not a trained file


class ProviderError(RuntimeError):
    """One failed attempt. ``retryable``: another attempt may succeed; ``billed``: the provider
    charged for this attempt anyway; ``nsfw``: retry with a new seed; ``unknown``: the request may
    or may not have been accepted and charged (never retried blind); ``resumable``: the provider
    accepted the request and it may still finish, so keep its journal entry and resume it;
    ``billed_usd``: what the platform reported charging for it, billed instead of the quote."""

    def __init__(self, message: str, *, retryable: bool, billed: bool, request_id: str | None = None,
                 nsfw: bool = False, unknown: bool = False, resumable: bool = False,
                 billed_usd: Decimal | None = None):
        super().__init__(message)
        self.billed_usd = billed_usd  # what the platform said the failed attempt cost (BFL's cost), if it said
        self.retryable = retryable
        self.billed = billed
        self.request_id = request_id
        self.nsfw = nsfw
        self.unknown = unknown
        self.resumable = resumable


class Provider(Protocol):
    name: str
    concurrency: int  # requests it can usefully run at once

    def generate(self, request: GenerationRequest, dest: Path, key: str, submission: Submission) -> ProviderResult:
        """Write the image for ``request`` to ``dest`` (PNG). A paid provider journals its submission
        in ``submission`` (intent before sending, handle once accepted) and resumes ``submission.resume``."""
        ...

    def generate_text(self, request: GenerationRequest, key: str, submission: Submission) -> ProviderText:
        """Answer a text request (a model's output as text)."""
        ...

    def refetch(self, request: GenerationRequest, record: dict[str, Any], dest: Path) -> bool:
        """Fetch again, at no charge, the image a stored record came from (the store's copy was
        damaged). False when the provider no longer has it."""
        ...

    def close(self) -> None: ...
