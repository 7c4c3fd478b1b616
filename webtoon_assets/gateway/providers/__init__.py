"""Providers by name, and the choice of one from the environment."""

from __future__ import annotations

import os

from webtoon_assets.gateway.providers.base import Provider, ProviderResult
from webtoon_assets.gateway.providers.local import LocalProvider

PROVIDERS = {"local": LocalProvider}


def select_provider(name: str = "") -> Provider:
    """``name``, else ``WEBTOON_PROVIDER``, else fal when ``FAL_KEY`` is set and fal is available, else local."""
    chosen = name or os.environ.get("WEBTOON_PROVIDER", "")
    if not chosen:
        chosen = "fal" if os.environ.get("FAL_KEY") and "fal" in PROVIDERS else "local"
    if chosen not in PROVIDERS:
        raise ValueError(f"WEBTOON_PROVIDER: unknown provider {chosen!r}; expected one of {sorted(PROVIDERS)}")
    return PROVIDERS[chosen]()


__all__ = ["PROVIDERS", "Provider", "ProviderResult", "select_provider"]
