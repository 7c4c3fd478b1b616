"""A ledger row. Never holds a secret: only ids, sizes, counts and money.

On disk a row is one JSON line whose last field, ``sum``, is a checksum of the line without it:
a reader can tell a damaged row from a whole one without trusting either."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# unknown: a paid call whose outcome was lost (e.g. the answer to a submit); priced at its quote and
# counted as spent until `webtoon reconcile` settles it with a `reconciled` row (billed_usd = the
# correction, so sums over rows stay true without joins).
Status = Literal["generated", "cached", "refused", "failed", "unknown", "reconciled"]

SUM_FIELD = ',"sum":"'
SUM_LEN = 16


class LedgerRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(default_factory=lambda: uuid.uuid4().hex, description="unique per row")
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
    billed_usd: Decimal = Field(description="what was really charged: 0 offline, on hits, refusals, unbilled "
                                            "failures; the quote while unknown; the correction when reconciled")
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
    settles: str | None = Field(None, description="reconciled rows: the id of the unknown row they settle")
    error: str | None = None
    note: str | None = Field(None, description="why a row is what it is (restored, already billed, ...)")

    @property
    def counted_usd(self) -> Decimal:
        """What the attempt counts for in budgets and season totals: billed (spent) on a paid
        provider; offline, the list price of what was made (so an offline season is an exact quote)."""
        if self.provider == "local":
            return self.list_usd if self.status == "generated" else Decimal(0)
        return self.billed_usd

    def to_line(self) -> str:
        body = self.model_dump_json(exclude_none=True)
        return f"{body[:-1]}{SUM_FIELD}{_checksum(body)}\"}}\n"


class DamagedRow(ValueError):
    pass


def _checksum(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:SUM_LEN]


def parse_line(line: str) -> LedgerRow:
    """A row from one line, or DamagedRow saying what is wrong with it."""
    text = line.rstrip("\n")
    cut = text.rfind(SUM_FIELD)
    if cut >= 0:
        body = text[:cut] + "}"
        if text[cut + len(SUM_FIELD):] != f"{_checksum(body)}\"}}":
            raise DamagedRow("checksum does not match: the row was changed or damaged after it was written")
    else:  # rows written before checksums: accepted only if wholly of the old form
        body = text
        if '"id"' in body:
            raise DamagedRow("the checksum is missing")
    try:
        data = json.loads(body)
    except json.JSONDecodeError as e:
        raise DamagedRow(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(data, dict) and "id" not in data:
        data["id"] = "legacy-" + _checksum(body)  # stable across reads
    try:
        return LedgerRow.model_validate(data)
    except ValueError as e:
        raise DamagedRow(f"not a ledger row ({str(e).splitlines()[0]})") from None
