"""Which provider makes the images, as a resource: the UI's Resources page shows the one in use and
its settings, and a run can change them in the launchpad (``resources: provider: config: ...``).

Every setting left unset (None) is read from the environment when the run starts, then from the
built-in default, so the variables the README lists keep working and a launchpad value wins."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource, EnvVar
from dagster._config.pythonic_config import PartialResource
from pydantic import Field

from webtoon_assets.gateway.providers import Provider
from webtoon_assets.gateway.providers.local import LocalProvider

PROVIDERS = ("local", "fal")


class ProviderConfigError(ValueError):
    """A provider that cannot start (no key, an unknown name): the run's step says so, unretried."""


class ProviderResource(ConfigurableResource):
    def open(self, state_dir: Path) -> Provider:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """What the run uses, for its metadata and log (never a key)."""
        return {}


class LocalProviderResource(ProviderResource):
    """The offline preview renderer: no key, no network; each image is recorded at the list price of
    the model it stands in for, so an offline season is an exact quote."""

    def open(self, state_dir: Path) -> Provider:
        return LocalProvider()


class FalProviderResource(ProviderResource):
    """fal.ai through fal-client. Unset fields: WEBTOON_FAL_* from the environment, else the default."""

    api_key: str | None = Field(None, description="the fal key; unset = FAL_KEY at run time. Never shown or logged.")
    concurrency: int | None = Field(None, description="requests in progress at once: the account's concurrency "
                                                      "(WEBTOON_FAL_CONCURRENCY, default 2)")
    queue_ahead: int | None = Field(None, description="requests kept waiting in fal's queue beyond it, so the next "
                                                      "starts the moment one ends (WEBTOON_FAL_QUEUE_AHEAD, "
                                                      "default a quarter of the concurrency, at least 1)")
    references: str | None = Field(None, description="'upload' (fal storage) or 'inline' (data URIs) "
                                                     "(WEBTOON_FAL_REFERENCES, default upload)")
    poll_seconds: float | None = Field(None, description="status poll interval (WEBTOON_FAL_POLL_SECONDS, default 0.25)")
    timeout_seconds: float | None = Field(None, description="a request unfinished after this is cancelled "
                                                            "(WEBTOON_FAL_TIMEOUT_SECONDS, default 600)")
    base_url: str | None = Field(None, description="a fal-compatible host, e.g. a proxy (WEBTOON_FAL_BASE_URL)")

    def _settings(self):
        from webtoon_assets.gateway.providers.fal import FalSettings

        given = {k: v for k in ("concurrency", "queue_ahead", "references", "poll_seconds", "timeout_seconds", "base_url")
                 if (v := getattr(self, k)) is not None}
        try:
            return FalSettings.model_validate({**FalSettings.from_env().model_dump(exclude_unset=True), **given})
        except ValueError as e:
            raise ProviderConfigError(f"fal provider settings: {e}") from None

    def open(self, state_dir: Path) -> Provider:
        from webtoon_assets.gateway.providers.fal import FalProvider

        key = self.api_key or os.environ.get("FAL_KEY", "")
        if not key:
            raise ProviderConfigError("the fal provider needs FAL_KEY (see README, 'Running for real'); "
                                      "without a key, unset WEBTOON_PROVIDER to make offline previews")
        return FalProvider(key, self._settings(), state_dir)

    def settings(self) -> dict[str, Any]:
        s = self._settings()
        return {"concurrency": s.concurrency, "queue_ahead": s.ahead, "references": s.references, "timeout_seconds": s.timeout_seconds,
                **({"base_url": s.base_url} if s.base_url else {})}


def provider_resource(name: str = "") -> ProviderResource | PartialResource:
    """``name``, else ``WEBTOON_PROVIDER``, else fal when FAL_KEY is set, else the offline renderer.
    fal's is configured at launch: a run's launchpad values are merged over these, and reach the
    gateway's provider too (a fully built resource would ignore them)."""
    has_key = bool(os.environ.get("FAL_KEY"))
    chosen = name or os.environ.get("WEBTOON_PROVIDER", "") or ("fal" if has_key else "local")
    if chosen == "local":
        return LocalProviderResource()
    if chosen == "fal":
        # an EnvVar is resolved when the run starts, so Dagster never stores or shows the key itself
        return (FalProviderResource.configure_at_launch(api_key=EnvVar("FAL_KEY")) if has_key
                else FalProviderResource.configure_at_launch())
    raise ProviderConfigError(f"WEBTOON_PROVIDER: unknown provider {chosen!r}; expected one of {list(PROVIDERS)}")
