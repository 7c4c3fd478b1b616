"""Settle ``unknown`` rows (paid calls whose outcome was lost) against what the platform reports.

A settlement is a new ``reconciled`` row naming the unknown row it settles, whose billed_usd is
the correction (0 when the call was billed at its quote, minus the quote when it was not), so
every sum over the ledger stays true without joins and nothing is ever rewritten. Whatever the
platform cannot settle stays unknown, counted at its quote.

By request id where one is known (the queue says whether the request finished with an output);
otherwise by endpoint and time window from the account's usage report: what fal billed in the
window, less what the ledger already knows it billed there, is what the unknown rows cost. That
needs the window's usage to be this project's alone (a key used by nothing else).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterable, Protocol

from webtoon_assets.ledger.journal import Ledger
from webtoon_assets.ledger.row import LedgerRow

WINDOW = dt.timedelta(minutes=30)  # a request is billed when it completes: allow for its run time
TOLERANCE = Decimal("0.000001")


class Billing(Protocol):
    def request_fate(self, endpoint: str, request_id: str) -> tuple[str, str]: ...

    def usage_usd(self, endpoint: str, start: dt.datetime, end: dt.datetime) -> Decimal | None: ...


@dataclass
class Settlement:
    row: LedgerRow
    outcome: str  # billed, not_billed, unknown
    why: str
    correction: Decimal = Decimal(0)


@dataclass
class Report:
    settled: list[Settlement] = field(default_factory=list)
    open: list[Settlement] = field(default_factory=list)

    @property
    def still_held_usd(self) -> Decimal:
        return sum((s.row.billed_usd for s in self.open), Decimal(0))


def open_unknowns(rows: Iterable[LedgerRow]) -> list[LedgerRow]:
    rows = list(rows)
    settled = {r.settles for r in rows if r.status == "reconciled"}
    return [r for r in rows if r.status == "unknown" and r.id not in settled]


def _net_known(rows: list[LedgerRow], provider: str, endpoint: str, start: dt.datetime, end: dt.datetime,
               pending: set[str]) -> Decimal:
    """What the ledger knows was billed for ``endpoint`` by attempts made in the window."""
    corrections: dict[str, Decimal] = {}
    for r in rows:
        if r.status == "reconciled" and r.settles:
            corrections[r.settles] = corrections.get(r.settles, Decimal(0)) + r.billed_usd
    total = Decimal(0)
    for r in rows:
        if r.provider != provider or r.endpoint != endpoint or not start <= r.time < end or r.id in pending:
            continue
        if r.status in ("generated", "failed"):
            total += r.billed_usd
        elif r.status == "unknown":
            total += r.billed_usd + corrections.get(r.id, Decimal(0))
    return total


def reconcile(rows: Iterable[LedgerRow], billing: Billing, provider: str = "fal") -> Report:
    rows = list(rows)
    report = Report()
    todo = [r for r in open_unknowns(rows) if r.provider == provider]
    by_window: dict[str, list[LedgerRow]] = {}
    for r in todo:
        if r.provider_request_id:
            fate, why = billing.request_fate(r.endpoint, r.provider_request_id)
            _settle(report, r, fate, why)
        else:
            by_window.setdefault(r.endpoint, []).append(r)
    for endpoint, unknown in by_window.items():
        unknown.sort(key=lambda r: r.time)
        start, end = unknown[0].time - WINDOW, unknown[-1].time + WINDOW
        usage = billing.usage_usd(endpoint, start, end)
        if usage is None:
            for r in unknown:
                _settle(report, r, "unknown", "no request id, and no usage report (set FAL_ADMIN_KEY)")
            continue
        extra = usage - _net_known(rows, provider, endpoint, start, end, {r.id for r in unknown})
        for r in unknown:  # the usage the ledger cannot explain, given to the unknown rows in order
            if extra >= r.billed_usd - TOLERANCE:
                extra -= r.billed_usd
                _settle(report, r, "billed", f"fal's usage for {endpoint} in the window covers it")
            elif extra <= TOLERANCE:
                _settle(report, r, "not_billed", f"fal's usage for {endpoint} in the window has nothing left for it")
            else:
                _settle(report, r, "unknown", f"fal's usage leaves ${extra} unexplained, less than its quote")
    return report


def _settle(report: Report, row: LedgerRow, fate: str, why: str) -> None:
    if fate == "billed":
        report.settled.append(Settlement(row, fate, why, Decimal(0)))
    elif fate == "not_billed":
        report.settled.append(Settlement(row, fate, why, -row.billed_usd))
    else:
        report.open.append(Settlement(row, "unknown", why))


def write_settlements(ledger: Ledger, report: Report, run_id: str) -> list[LedgerRow]:
    written = []
    now = dt.datetime.now(dt.timezone.utc)
    for s in report.settled:
        u = s.row
        row = LedgerRow(time=now, run_id=run_id, series=u.series, episode=u.episode, asset=u.asset, item=u.item,
                        reusable=u.reusable, provider=u.provider, endpoint=u.endpoint, request_key=u.request_key,
                        status="reconciled", billed_usd=s.correction, list_usd=Decimal(0), credits=Decimal(0),
                        provider_request_id=u.provider_request_id, settles=u.id,
                        note=f"{s.outcome}: {s.why}")
        ledger.append(row)
        written.append(row)
    return written
