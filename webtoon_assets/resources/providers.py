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

from webtoon_assets.gateway.providers import (MODES, PLATFORM_KEYS, Provider, Providers, chosen_mode,
                                              keys_in_environment, open_platform)
from webtoon_assets.gateway.providers.local import LocalProvider


class ProviderConfigError(ValueError):
    """A provider that cannot start (no key, an unknown name): the run's step says so, unretried."""


class ProviderResource(ConfigurableResource):
    def open(self, state_dir: Path) -> Providers:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """What the run uses, for its metadata and log (never a key)."""
        return {}


class LocalProviderResource(ProviderResource):
    """The offline preview renderer: no key, no network; each image is recorded at the list price of
    the model it stands in for, so an offline season is an exact quote."""

    def open(self, state_dir: Path) -> Providers:
        return Providers(stand_in=LocalProvider())


class OnlineProviderResource(ProviderResource):
    """The paid platforms: a provider for each one whose key is set (fal through fal-client; BFL,
    Gemini, Together and Replicate over their HTTP APIs). An endpoint's platform in the price book
    chooses which one makes it. Unset fields: WEBTOON_FAL_* / WEBTOON_<PLATFORM>_* from the
    environment, else the default. Keys are EnvVars, resolved when the run starts: never shown or logged."""

    api_key: str | None = Field(None, description="the fal key; unset = FAL_KEY at run time. Never shown or logged.")
    bfl_api_key: str | None = Field(None, description="BFL's key (BFL_API_KEY). Never shown or logged.")
    gemini_api_key: str | None = Field(None, description="the Gemini API key (GEMINI_API_KEY). Never shown or logged.")
    together_api_key: str | None = Field(None, description="Together's key (TOGETHER_API_KEY). Never shown or logged.")
    replicate_api_token: str | None = Field(None, description="Replicate's token (REPLICATE_API_TOKEN). "
                                                              "Never shown or logged.")
    concurrency: int | None = Field(None, description="fal: requests in progress at once, the account's concurrency "
                                                      "(WEBTOON_FAL_CONCURRENCY, default 2)")
    queue_ahead: int | None = Field(None, description="fal: requests kept waiting in fal's queue beyond it, so the "
                                                      "next starts the moment one ends (WEBTOON_FAL_QUEUE_AHEAD, "
                                                      "default a quarter of the concurrency, at least 1)")
    references: str | None = Field(None, description="fal: 'upload' (fal storage) or 'inline' (data URIs) "
                                                     "(WEBTOON_FAL_REFERENCES, default upload)")
    poll_seconds: float | None = Field(None, description="fal: status poll interval (WEBTOON_FAL_POLL_SECONDS, "
                                                         "default 0.25)")
    timeout_seconds: float | None = Field(None, description="fal: a request unfinished after this is cancelled "
                                                            "(WEBTOON_FAL_TIMEOUT_SECONDS, default 600)")
    base_url: str | None = Field(None, description="fal: a fal-compatible host, e.g. a proxy (WEBTOON_FAL_BASE_URL)")

    def _settings(self):
        from webtoon_assets.gateway.providers.fal import FalSettings

        given = {k: v for k in ("concurrency", "queue_ahead", "references", "poll_seconds", "timeout_seconds", "base_url")
                 if (v := getattr(self, k)) is not None}
        try:
            return FalSettings.model_validate({**FalSettings.from_env().model_dump(exclude_unset=True), **given})
        except ValueError as e:
            raise ProviderConfigError(f"fal provider settings: {e}") from None

    def platform_keys(self) -> dict[str, str]:
        """platform -> key: this resource's, else the environment's (never returned to a log)."""
        given = {"fal": self.api_key, "bfl": self.bfl_api_key, "gemini": self.gemini_api_key,
                 "together": self.together_api_key, "replicate": self.replicate_api_token}
        return {p: k for p, v in PLATFORM_KEYS.items() if (k := given[p] or os.environ.get(v, ""))}

    def open(self, state_dir: Path) -> Providers:
        keys = self.platform_keys()
        if not keys:
            raise ProviderConfigError(f"the online providers need a key ({', '.join(PLATFORM_KEYS.values())}; see "
                                      "README, 'Running for real'); without one, unset WEBTOON_PROVIDER to make "
                                      "offline previews")
        opened: dict[str, Provider] = {}
        try:
            for platform, key in keys.items():
                opened[platform] = open_platform(platform, key, state_dir,
                                                 self._settings() if platform == "fal" else None)
        except ValueError as e:  # a platform's WEBTOON_<PLATFORM>_* settings that do not validate
            for p in opened.values():
                p.close()
            raise ProviderConfigError(f"{platform} provider settings: {e}") from None
        return Providers(opened)

    def settings(self) -> dict[str, Any]:
        s = self._settings()  # fal's, which the resource's own fields set
        return {"concurrency": s.concurrency, "queue_ahead": s.ahead, "references": s.references,
                "timeout_seconds": s.timeout_seconds, **({"base_url": s.base_url} if s.base_url else {}),
                "platforms": ", ".join(sorted(self.platform_keys())) or "none"}


FalProviderResource = OnlineProviderResource  # its name before BFL, Gemini, Together and Replicate joined fal


def provider_resource(name: str = "") -> ProviderResource | PartialResource:
    """``name``, else ``WEBTOON_PROVIDER``: ``local`` (offline previews for every platform) or
    ``online`` (``fal``, its older name): a provider per platform whose key is set. Unset: online
    when any platform key is set, else local. Online is configured at launch: a run's launchpad
    values are merged over these, and reach the gateway's providers too."""
    present = {p: PLATFORM_KEYS[p] for p in keys_in_environment()}
    chosen = chosen_mode(name, bool(present))
    if chosen == "local":
        return LocalProviderResource()
    if chosen in ("online", "fal"):
        # an EnvVar is resolved when the run starts, so Dagster never stores or shows a key itself; only
        # the variables set now are named (an EnvVar left unset would fail every run's launch)
        fields = {"fal": "api_key", "bfl": "bfl_api_key", "gemini": "gemini_api_key", "together": "together_api_key",
                  "replicate": "replicate_api_token"}
        return OnlineProviderResource.configure_at_launch(**{fields[p]: EnvVar(v) for p, v in present.items()})
    raise ProviderConfigError(f"WEBTOON_PROVIDER: unknown provider {chosen!r}; expected one of {list(MODES)}")
