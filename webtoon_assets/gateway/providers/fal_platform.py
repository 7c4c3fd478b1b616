"""What fal itself reports about money: a request's fate by id (queue API, the ordinary key) and
the account's usage by endpoint and time window (platform API ``GET /v1/models/usage``, an admin
key). ``webtoon reconcile`` settles unknown outcomes with these."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from decimal import Decimal
from typing import Literal

import fal_client
import httpx

from webtoon_assets.gateway.providers.fal import FalSettings, _point_client_at

Fate = Literal["billed", "not_billed", "unknown"]


class FalPlatform:
    """``key``: FAL_KEY (request status); ``admin_key``: FAL_ADMIN_KEY (usage; optional)."""

    def __init__(self, key: str, admin_key: str | None = None, settings: FalSettings | None = None,
                 api_url: str | None = None):
        self.settings = settings or FalSettings.from_env()
        if self.settings.base_url:
            _point_client_at(self.settings.base_url)
        self.key = key
        self.admin_key = admin_key
        base = (self.settings.base_url or "").rstrip("/")
        self.api_url = (api_url or os.environ.get("WEBTOON_FAL_API_URL")
                        or (f"{base}/v1" if base else "https://api.fal.ai/v1")).rstrip("/")

    @classmethod
    def from_env(cls) -> "FalPlatform":
        return cls(os.environ.get("FAL_KEY", ""), os.environ.get("FAL_ADMIN_KEY") or None)

    def request_fate(self, endpoint: str, request_id: str) -> tuple[Fate, str]:
        """Billed (completed with an output), not billed (failed or cancelled), or unknown."""
        async def go() -> tuple[Fate, str]:
            client = fal_client.AsyncClient(key=self.key)
            try:
                status = await client.status(endpoint, request_id)
            except fal_client.FalClientHTTPError as e:
                return "unknown", f"fal answered {e.status_code} for request {request_id}"
            except (httpx.TransportError, httpx.TimeoutException) as e:
                return "unknown", f"fal could not be reached ({type(e).__name__})"
            if not isinstance(status, fal_client.Completed):
                return "unknown", f"request {request_id} is still {type(status).__name__.lower()}"
            if status.error:
                return "not_billed", f"request {request_id} ended without an output ({status.error})"
            return "billed", f"request {request_id} completed with an output"
        if not self.key:
            return "unknown", "FAL_KEY is not set"
        return asyncio.run(go())

    def usage_usd(self, endpoint: str, start: dt.datetime, end: dt.datetime) -> Decimal | None:
        """What fal billed for ``endpoint`` in [start, end), or None without an admin key."""
        if not self.admin_key:
            return None
        params = {"endpoint_id": endpoint, "start": start.isoformat(), "end": end.isoformat(),
                  "expand": "summary", "bound_to_timeframe": "false", "timeframe": "minute"}
        with httpx.Client(timeout=60) as http:  # the summary aggregates the whole window in one answer
            page = http.get(f"{self.api_url}/models/usage", params=params,
                            headers={"Authorization": f"Key {self.admin_key}"})
        page.raise_for_status()
        return sum((Decimal(str(r.get("cost", 0))) for r in page.json().get("summary") or []
                    if r.get("endpoint_id") == endpoint), Decimal(0))
