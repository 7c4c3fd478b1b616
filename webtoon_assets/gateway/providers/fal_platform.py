"""What fal itself reports about money: a request's fate by id (queue API, the ordinary key) and
the account's usage by endpoint and time window (platform API ``GET /v1/models/usage``, an admin
key), in total or per time bucket. ``webtoon reconcile`` settles unknown outcomes with these, and
compares the ledger with fal's usage bucket by bucket."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable, Literal

import fal_client
import httpx

from webtoon_assets.gateway.providers.fal import FalSettings, _point_client_at
from webtoon_assets.ledger.reconcile import TIMEFRAMES, Timeframe, bucket_start
from webtoon_assets.pricing.refresh import PlatformError, chunks, fal_api_url, get_json, pages

Fate = Literal["billed", "not_billed", "unknown"]
USAGE_CHUNK = 50  # endpoint ids per usage call


@dataclass(frozen=True)
class UsageBucket:
    """What fal billed for one endpoint in one time bucket (``bucket``: its start, UTC)."""

    endpoint: str
    bucket: dt.datetime
    quantity: Decimal
    unit: str
    cost: Decimal
    unit_price: Decimal | None = None


def _utc(text: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)


class FalPlatform:
    """``key``: FAL_KEY (request status); ``admin_key``: FAL_ADMIN_KEY (usage; optional)."""

    def __init__(self, key: str, admin_key: str | None = None, settings: FalSettings | None = None,
                 api_url: str | None = None):
        self.settings = settings or FalSettings.from_env()
        if self.settings.base_url:
            _point_client_at(self.settings.base_url)
        self.key = key
        self.admin_key = admin_key
        self.api_url = (api_url or fal_api_url(self.settings.base_url or "")).rstrip("/")

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
        """What fal billed for ``endpoint`` in [start, end), or None without an admin key;
        PlatformError when fal cannot tell (unreachable, the key refused)."""
        if not self.admin_key:
            return None
        params = {"endpoint_id": endpoint, "start": start.isoformat(), "end": end.isoformat(),
                  "expand": "summary", "bound_to_timeframe": "false", "timeframe": "minute"}
        with self._http() as http:  # the summary aggregates the whole window in one answer
            page = get_json(http, f"{self.api_url}/models/usage", list(params.items()), "fal's usage API",
                            "FAL_ADMIN_KEY")
        try:
            return sum((Decimal(str(r.get("cost", 0))) for r in page.get("summary") or []
                        if r.get("endpoint_id") == endpoint), Decimal(0))
        except (ArithmeticError, AttributeError) as e:
            raise PlatformError(f"fal's usage API: an unreadable summary ({type(e).__name__})") from None

    def usage_buckets(self, endpoints: Iterable[str], start: dt.datetime, end: dt.datetime,
                      timeframe: Timeframe = "hour") -> list[UsageBucket] | None:
        """What fal billed per endpoint and ``timeframe`` bucket in [start, end) (its usage report's
        time series, every page), or None without an admin key; PlatformError when fal cannot tell.
        Results of one endpoint in one bucket (several units or keys) are kept apart; the caller sums."""
        if not self.admin_key:
            return None
        if timeframe not in TIMEFRAMES:
            raise ValueError(f"timeframe {timeframe!r}: expected one of {list(TIMEFRAMES)}")
        wanted = sorted(set(endpoints))
        out: list[UsageBucket] = []
        with self._http() as http:
            for part in chunks(wanted, USAGE_CHUNK):
                params = [*(("endpoint_id", e) for e in part), ("start", start.isoformat()), ("end", end.isoformat()),
                          ("timeframe", timeframe), ("expand", "time_series"), ("bound_to_timeframe", "false")]
                for page in pages(http, f"{self.api_url}/models/usage", params, "fal's usage API", "FAL_ADMIN_KEY"):
                    out += _buckets(page, set(part), timeframe)
        return out

    def _http(self) -> httpx.Client:
        return httpx.Client(timeout=60, headers={"Authorization": f"Key {self.admin_key}"})


def _buckets(page: dict, endpoints: set[str], timeframe: str) -> list[UsageBucket]:
    """A usage page's ``time_series: [{bucket, results: [{endpoint_id, unit, quantity, unit_price,
    cost}]}]`` as buckets of the endpoints asked for."""
    out = []
    for item in page.get("time_series") or []:
        try:
            when = bucket_start(_utc(str(item["bucket"])), timeframe)
            for r in item.get("results") or []:
                if r.get("endpoint_id") not in endpoints:
                    continue
                price = r.get("unit_price")
                out.append(UsageBucket(r["endpoint_id"], when, Decimal(str(r.get("quantity") or 0)),
                                       str(r.get("unit") or ""), Decimal(str(r.get("cost") or 0)),
                                       None if price is None else Decimal(str(price))))
        except (KeyError, TypeError, ValueError, ArithmeticError, AttributeError) as e:
            raise PlatformError(f"fal's usage API: an unreadable time series entry {str(item)[:200]!r} "
                                f"({type(e).__name__})") from None
    return out
