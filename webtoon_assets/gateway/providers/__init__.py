"""Providers by platform: the price book's platform of an endpoint chooses who makes it.

Offline the local renderer stands in for every platform (at each endpoint's list price). Online,
each platform whose key is set has its own provider; an endpoint of a platform without one is
refused before anything is spent, naming the key to set."""

from __future__ import annotations

import importlib
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from webtoon_assets.gateway.providers.base import Provider, ProviderError, ProviderResult
from webtoon_assets.gateway.providers.local import LocalProvider

# platform -> the variable holding its key (README, "Running for real")
PLATFORM_KEYS = {"fal": "FAL_KEY", "bfl": "BFL_API_KEY", "gemini": "GEMINI_API_KEY", "together": "TOGETHER_API_KEY",
                 "replicate": "REPLICATE_API_TOKEN"}


# platform -> (module, provider class, settings class) under webtoon_assets.gateway.providers
PLATFORM_CLASSES = {"fal": ("fal", "FalProvider", "FalSettings"), "bfl": ("bfl", "BflProvider", "BflSettings"),
                    "gemini": ("gemini", "GeminiProvider", "GeminiSettings"),
                    "together": ("together", "TogetherProvider", "TogetherSettings"),
                    "replicate": ("replicate", "ReplicateProvider", "ReplicateSettings")}
MODES = ("local", "online", "fal")


def open_platform(platform: str, key: str, state_dir: Path, settings: Any = None) -> Provider:
    """The platform's provider with its key; ``settings`` default to its WEBTOON_<PLATFORM>_* variables."""
    module, cls, settings_cls = PLATFORM_CLASSES[platform]
    mod = importlib.import_module(f"webtoon_assets.gateway.providers.{module}")
    return getattr(mod, cls)(key, settings if settings is not None else getattr(mod, settings_cls).from_env(), state_dir)


def keys_in_environment() -> dict[str, str]:
    """platform -> key, for each platform whose key variable is set."""
    return {p: os.environ[v] for p, v in PLATFORM_KEYS.items() if os.environ.get(v)}


def chosen_mode(name: str, any_key: bool) -> str:
    """``name``, else ``WEBTOON_PROVIDER``, else online when any platform key is set, else local."""
    return name or os.environ.get("WEBTOON_PROVIDER", "") or ("online" if any_key else "local")


def select_provider(name: str = "", fal_key: str | None = None, state_dir: Path | None = None) -> "Providers":
    """``name``, else ``WEBTOON_PROVIDER``: ``local`` makes offline previews for every platform;
    ``online`` (or ``fal``, its older name) a provider for each platform whose key is set. Unset,
    online when any key is set, else local."""
    keys = keys_in_environment()
    if fal_key:
        keys["fal"] = fal_key
    chosen = chosen_mode(name, bool(keys))
    if chosen == "local":
        return Providers(stand_in=LocalProvider())
    if chosen not in MODES:
        raise ValueError(f"WEBTOON_PROVIDER: unknown provider {chosen!r}; expected one of {list(MODES)}")
    if chosen == "fal" and "fal" not in keys:
        raise ValueError("WEBTOON_PROVIDER=fal needs FAL_KEY (see README, 'Running for real')")
    if not keys:
        raise ValueError(f"WEBTOON_PROVIDER={chosen} needs a platform key: one of {sorted(PLATFORM_KEYS.values())}")
    return Providers({p: open_platform(p, k, state_dir or Path(".")) for p, k in keys.items()})


class NoProvider(ValueError):
    """An endpoint of a platform this run has no provider for: refused before any spend."""


class Providers:
    """``by_platform``: each platform's provider; ``stand_in``: the one for every other platform
    (the offline renderer, or in tests a single provider for all)."""

    def __init__(self, by_platform: dict[str, Provider] | None = None, stand_in: Provider | None = None):
        self.by_platform = dict(by_platform or {})
        self.stand_in = stand_in
        self._slots: dict[int, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, provider: "Provider | Providers") -> "Providers":
        return provider if isinstance(provider, Providers) else cls(stand_in=provider)

    def for_platform(self, platform: str, endpoint: str = "") -> Provider:
        if (p := self.by_platform.get(platform)) is not None:
            return p
        if self.stand_in is not None:
            return self.stand_in
        key = PLATFORM_KEYS.get(platform)
        what = f"{endpoint} is made by {platform}" if endpoint else f"platform {platform}"
        how = (f"set {key} for it" if key else "no provider is written for it yet")
        raise NoProvider(f"{what}, and this run has no provider for {platform}: {how} (the run's providers: "
                         f"{self.names}); or unset every key to make offline previews at list price")

    @property
    def all(self) -> list[Provider]:
        out = list(self.by_platform.values()) + ([self.stand_in] if self.stand_in is not None else [])
        return list({id(p): p for p in out}.values())

    @property
    def names(self) -> str:
        """'local', 'fal', 'bfl+fal': what the run's metadata shows."""
        return "+".join(sorted({p.name for p in self.all})) or "none"

    @property
    def default(self) -> Provider:
        """The provider of requests that name no platform (the stand-in, else fal's, else any)."""
        return self.stand_in or self.by_platform.get("fal") or self.all[0]

    @contextmanager
    def slot(self, provider: Provider) -> Iterator[None]:
        """At most ``provider.concurrency`` of its requests at once, whatever else a batch holds."""
        with self._lock:
            sem = self._slots.setdefault(id(provider), threading.BoundedSemaphore(max(1, provider.concurrency)))
        with sem:
            yield

    def close(self) -> None:
        for p in self.all:
            p.close()


__all__ = ["MODES", "PLATFORM_KEYS", "NoProvider", "chosen_mode", "keys_in_environment", "open_platform",
           "select_provider", "Provider", "ProviderError", "ProviderResult", "Providers", "LocalProvider"]
