"""Providers by name, and the choice of one from the environment."""

from __future__ import annotations

import os
from pathlib import Path

from webtoon_assets.gateway.providers.base import Provider, ProviderError, ProviderResult
from webtoon_assets.gateway.providers.local import LocalProvider

PROVIDERS = ("local", "fal")


def select_provider(name: str = "", fal_key: str | None = None, state_dir: Path | None = None) -> Provider:
    """``name``, else ``WEBTOON_PROVIDER``, else fal when a key is set, else local (offline)."""
    key = fal_key or os.environ.get("FAL_KEY") or ""
    chosen = name or os.environ.get("WEBTOON_PROVIDER", "") or ("fal" if key else "local")
    if chosen == "local":
        return LocalProvider()
    if chosen == "fal":
        if not key:
            raise ValueError("WEBTOON_PROVIDER=fal needs FAL_KEY (see README, 'Running for real')")
        from webtoon_assets.gateway.providers.fal import FalProvider, FalSettings

        return FalProvider(key, FalSettings.from_env(), state_dir or Path("."))
    raise ValueError(f"WEBTOON_PROVIDER: unknown provider {chosen!r}; expected one of {list(PROVIDERS)}")


__all__ = ["PROVIDERS", "Provider", "ProviderError", "ProviderResult", "select_provider"]
