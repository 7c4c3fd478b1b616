"""A ledger row. Never holds a secret: only ids, sizes, counts and money."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["generated", "cached", "refused", "failed"]


class LedgerRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    time: dt.datetime
    run_id: str
    series: str
    episode: str
    asset: str
    item: str
    reusable: bool = Field(description="a one-time artifact (style, character, background) shared by episodes")
    provider: str
    endpoint: str
    request_key: str
    status: Status
    billed_usd: Decimal = Field(description="what was really charged: 0 offline, on hits, refusals, unbilled failures")
    list_usd: Decimal = Field(description="the request at list price: the quote offline, the saving on a hit")
    credits: Decimal
    units: Decimal | None = None
    unit: str | None = None
    megapixels: Decimal | None = None
    images: int | None = None
    seconds: Decimal | None = None
    width: int | None = None
    height: int | None = None
    inputs: list[tuple[int, int]] = Field(default_factory=list, description="reference image sizes sent")
    provider_request_id: str | None = None
    billable_units: Decimal | None = Field(None, description="units the provider reported (fal: x-fal-billable-units)")
    error: str | None = None

    @property
    def cost_usd(self) -> Decimal:
        """What the attempt costs the season: billed, or offline what it would have been billed."""
        if self.provider == "local":
            return self.list_usd if self.status == "generated" else Decimal(0)
        return self.billed_usd
