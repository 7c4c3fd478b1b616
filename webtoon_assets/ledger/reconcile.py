"""Settle ``unknown`` rows (paid calls whose outcome was lost) against what the platform reports.

A settlement is a new ``reconciled`` row naming the unknown row it settles, whose billed_usd is
the correction (0 when the call was billed at its quote, minus the quote when it was not), so
every sum over the ledger stays true without joins and nothing is ever rewritten. Whatever the
platform cannot settle stays unknown, counted at its quote.

By request id where one is known (the queue says whether the request finished with an output);
otherwise by endpoint and time window from the account's usage report: what fal billed in the
window, less what the ledger already knows it billed there, is what the unknown rows cost. That
needs the window's usage to be this project's alone (a key used by nothing else).

Then the ledger is compared with what the platforms report (``compare_with_platforms``), over a
window of time (by default the last week):

- ``fal_units``: per fal result, the units our price rule counted against fal's
  ``x-fal-billable-units``; dollars = the units' difference at the rule's unit price;
- ``fal_usage``: per fal endpoint and hour, what fal's usage report says it billed against the
  ledger's billed_usd there (generated, failed and unknown rows, with the corrections settling them);
- ``bfl_cost``: per BFL response, the cost BFL reported (billed_usd) against our quote (list_usd).

Each difference is drift when it is larger than the tolerance (``DRIFT_TOLERANCE_USD`` or
``DRIFT_TOLERANCE_SHARE`` of the platform's figure, whichever is larger). Every run's differences
are appended to the reconciliation file (``DataLayout.reconciliation_path``), which the cost
tables load whole as the ``reconciliation`` table.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Iterable, Literal, Protocol

from webtoon_assets.ledger.journal import Ledger
from webtoon_assets.ledger.row import LedgerRow
from webtoon_assets.pricing.refresh import PlatformError

if TYPE_CHECKING:
    from pathlib import Path

    from webtoon_assets.pricing import PriceBook

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
        try:
            usage = billing.usage_usd(endpoint, start, end)
        except PlatformError as e:  # unreachable, the key refused: they stay unknown, and say why
            for r in unknown:
                _settle(report, r, "unknown", str(e))
            continue
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


# -- comparing the ledger with what the platforms report ---------------------------------------------------
# A difference is drift when it is larger than DRIFT_TOLERANCE_USD or DRIFT_TOLERANCE_SHARE of the
# platform's figure, whichever is larger (`webtoon reconcile --tolerance USD --tolerance-percent P`).
DRIFT_TOLERANCE_USD = Decimal("0.01")
DRIFT_TOLERANCE_SHARE = Decimal("0.01")  # 1 %
LOOKBACK = dt.timedelta(days=7)  # what `webtoon reconcile` compares by default: the last week
USAGE_TIMEFRAME = "hour"  # fal's usage is compared per endpoint and hour
SOURCES = ("fal_units", "fal_usage", "bfl_cost")
# Columns of the reconciliation file (one JSON object a line) and of the `reconciliation` table.
RECONCILIATION_COLUMNS = ["run_id", "checked_at", "source", "endpoint", "bucket", "timeframe", "row_id",
                          "ledger_usd", "platform_usd", "difference_usd", "drift", "tolerance_usd",
                          "ledger_units", "platform_units", "unit", "note"]
_BILLED = ("generated", "failed", "unknown")  # the rows whose billed_usd fal's usage should show


Timeframe = Literal["minute", "hour", "day"]
TIMEFRAMES: dict[str, dt.timedelta] = {"minute": dt.timedelta(minutes=1), "hour": dt.timedelta(hours=1),
                                       "day": dt.timedelta(days=1)}


def bucket_start(when: dt.datetime, timeframe: str) -> dt.datetime:
    """The start (UTC) of the ``timeframe`` bucket holding ``when`` (a naive time is taken as UTC)."""
    t = _utc(when)
    if timeframe == "minute":
        return t.replace(second=0, microsecond=0)
    if timeframe == "hour":
        return t.replace(minute=0, second=0, microsecond=0)
    if timeframe == "day":
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    raise ValueError(f"timeframe {timeframe!r}: expected one of {list(TIMEFRAMES)}")


class Usage(Protocol):
    def usage_buckets(self, endpoints: Iterable[str], start: dt.datetime, end: dt.datetime,
                      timeframe: str = "hour") -> list | None: ...


@dataclass(frozen=True)
class Tolerance:
    usd: Decimal = DRIFT_TOLERANCE_USD
    share: Decimal = DRIFT_TOLERANCE_SHARE

    def limit(self, platform_usd: Decimal) -> Decimal:
        return max(self.usd, self.share * abs(platform_usd))

    def __str__(self) -> str:
        return f"${self.usd} or {(self.share * 100).normalize():f}% of the platform's figure, whichever is larger"


@dataclass
class Difference:
    """One place where the ledger and a platform disagree. ``ledger_usd``: what the ledger says;
    ``platform_usd``: what the platform says (or implies); the difference is platform − ledger."""

    source: str  # fal_units, fal_usage, bfl_cost
    endpoint: str
    ledger_usd: Decimal
    platform_usd: Decimal
    bucket: dt.datetime | None = None  # fal_usage: the bucket's start (UTC)
    timeframe: str | None = None
    row_id: str | None = None  # fal_units, bfl_cost: the ledger row
    ledger_units: Decimal | None = None
    platform_units: Decimal | None = None
    unit: str | None = None
    note: str = ""
    tolerance_usd: Decimal = Decimal(0)  # the limit applied
    drift: bool = False

    @property
    def difference_usd(self) -> Decimal:
        return self.platform_usd - self.ledger_usd

    def judge(self, tolerance: Tolerance) -> "Difference":
        self.tolerance_usd = tolerance.limit(self.platform_usd)
        self.drift = abs(self.difference_usd) > self.tolerance_usd
        return self

    def to_json(self, run_id: str, checked_at: dt.datetime) -> dict[str, object]:
        def s(v: object) -> object:
            return None if v is None else format(v, "f") if isinstance(v, Decimal) else str(v)
        return {"run_id": run_id, "checked_at": checked_at.isoformat(), "source": self.source,
                "endpoint": self.endpoint, "bucket": self.bucket.isoformat() if self.bucket else None,
                "timeframe": self.timeframe, "row_id": self.row_id, "ledger_usd": s(self.ledger_usd),
                "platform_usd": s(self.platform_usd), "difference_usd": s(self.difference_usd),
                "drift": self.drift, "tolerance_usd": s(self.tolerance_usd), "ledger_units": s(self.ledger_units),
                "platform_units": s(self.platform_units), "unit": self.unit, "note": self.note}


@dataclass
class SourceCheck:
    source: str
    compared: int = 0  # rows or buckets compared
    of: str = "row(s)"
    skipped: str | None = None  # why it was not compared (no admin key, nothing to compare)
    error: str | None = None  # why it could not be (fal unreachable, the key refused)


@dataclass
class Comparison:
    since: dt.datetime
    until: dt.datetime
    tolerance: Tolerance
    checks: dict[str, SourceCheck] = field(default_factory=dict)
    differences: list[Difference] = field(default_factory=list)

    @property
    def drift(self) -> list[Difference]:
        return [d for d in self.differences if d.drift]

    @property
    def errors(self) -> list[str]:
        return [f"{c.source}: {c.error}" for c in self.checks.values() if c.error]


def _utc(t: dt.datetime) -> dt.datetime:
    return (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)


def unit_price(row: LedgerRow, book: "PriceBook | None") -> Decimal | None:
    """What one more of the row's units costs: the rule's unit price where the rule has a single one,
    else the row's own list price per unit (None when it counted no units)."""
    entry = book.entry(row.endpoint) if book is not None and book.has(row.endpoint) else None
    rule = entry.price if entry is not None else None
    kind = getattr(rule, "rule", None)
    single = {"per_megapixel": "usd_per_mp", "per_call": "usd_per_call", "per_minute": "usd_per_minute",
              "per_step": "usd_per_step"}
    if kind in single:
        return getattr(rule, single[kind])
    if kind == "per_image" and not rule.tiers:
        return rule.usd_per_image
    if kind == "per_second" and len(rule.tiers) == 1:
        return rule.tiers[0].usd_per_second
    if (kind == "per_token" and rule.usd_per_million_output_tokens is None) or kind == "video_tokens":
        return rule.usd_per_million_tokens / Decimal(1_000_000)
    if row.units:
        return row.list_usd / row.units
    return None


def fal_unit_differences(rows: list[LedgerRow], book: "PriceBook | None", check: SourceCheck) -> list[Difference]:
    """fal rows whose units (what our price rule counted) differ from fal's x-fal-billable-units."""
    out = []
    for r in rows:
        if r.provider != "fal" or r.status not in ("generated", "failed") or r.units is None \
                or r.billable_units is None:
            continue
        check.compared += 1
        if r.billable_units == r.units:
            continue
        price = unit_price(r, book)
        if price is None:
            continue
        extra = (r.billable_units - r.units) * price
        out.append(Difference("fal_units", r.endpoint, r.billed_usd, r.billed_usd + extra, row_id=r.id,
                              ledger_units=r.units, platform_units=r.billable_units, unit=r.unit, note=(
                                  f"our rule counted {r.units} {r.unit or 'unit'}(s), fal billed {r.billable_units} "
                                  f"(x-fal-billable-units) at ${price.normalize():f} each")))
    if not check.compared:
        check.skipped = "no fal rows with fal's billable units"
    return out


def platform_cost_differences(rows: list[LedgerRow], provider: str, source: str, check: SourceCheck
                              ) -> list[Difference]:
    """Rows of a platform that reports each response's cost (BFL): billed_usd is that cost, list_usd
    our price book's quote; where they differ, the book's price has drifted from the platform's."""
    out = []
    for r in rows:
        if r.provider != provider or not (r.status == "generated" or (r.status == "failed" and r.billed_usd)):
            continue
        check.compared += 1
        if r.billed_usd != r.list_usd:
            out.append(Difference(source, r.endpoint, r.list_usd, r.billed_usd, row_id=r.id, note=(
                f"{provider} reported a cost of ${r.billed_usd}; the price book quoted ${r.list_usd}")))
    if not check.compared:
        check.skipped = f"no {provider} rows"
    return out


def ledger_buckets(rows: list[LedgerRow], start: dt.datetime, end: dt.datetime, timeframe: str
                   ) -> tuple[dict[tuple[str, dt.datetime], Decimal], dict[tuple[str, dt.datetime], int]]:
    """Per (endpoint, bucket): what the ledger says fal billed (generated, failed and unknown rows,
    each unknown row with the corrections that settle it), and how many unknown rows it holds unsettled."""
    corrections: dict[str, Decimal] = {}
    for r in rows:
        if r.status == "reconciled" and r.settles:
            corrections[r.settles] = corrections.get(r.settles, Decimal(0)) + r.billed_usd
    billed: dict[tuple[str, dt.datetime], Decimal] = {}
    held: dict[tuple[str, dt.datetime], int] = {}
    for r in rows:
        if r.provider != "fal" or r.status not in _BILLED or not start <= _utc(r.time) < end:
            continue
        key = (r.endpoint, bucket_start(r.time, timeframe))
        billed[key] = billed.get(key, Decimal(0)) + r.billed_usd + corrections.get(r.id, Decimal(0))
        if r.status == "unknown" and r.id not in corrections:
            held[key] = held.get(key, 0) + 1
    return billed, held


def usage_differences(rows: list[LedgerRow], usage: Usage, start: dt.datetime, end: dt.datetime, timeframe: str,
                      tolerance: Tolerance, check: SourceCheck) -> list[Difference]:
    """Per fal endpoint and bucket, what fal's usage report says it billed against what the ledger
    says. A pair of neighbouring buckets whose differences cancel is a request billed on the edge of
    the two (fal at completion, the ledger a moment later): noted, not drift."""
    check.of = f"endpoint-{timeframe}(s)"
    ledger, held = ledger_buckets(rows, start, end, timeframe)
    endpoints = sorted({e for e, _ in ledger})
    if not endpoints:
        check.skipped = "no fal rows to compare"
        return []
    try:
        buckets = usage.usage_buckets(endpoints, start, end, timeframe)
    except PlatformError as e:
        check.error = str(e)
        return []
    if buckets is None:
        check.skipped = "FAL_ADMIN_KEY is not set (fal's usage report needs an admin key)"
        return []
    fal: dict[tuple[str, dt.datetime], Decimal] = {}
    quantity: dict[tuple[str, dt.datetime], tuple[Decimal, str]] = {}
    for b in buckets:
        if not start <= b.bucket < end:
            continue
        key = (b.endpoint, b.bucket)
        fal[key] = fal.get(key, Decimal(0)) + b.cost
        q, _ = quantity.get(key, (Decimal(0), b.unit))
        quantity[key] = (q + b.quantity, b.unit)
    keys = sorted(set(ledger) | set(fal))
    check.compared = len(keys)
    out = []
    for key in keys:
        ours, theirs = ledger.get(key, Decimal(0)), fal.get(key, Decimal(0))
        if abs(theirs - ours) <= TOLERANCE:
            continue
        q, unit = quantity.get(key, (None, None))
        note = f"fal's usage: {q.normalize():f} {unit}" if q is not None else "fal's usage lists nothing"
        if held.get(key):
            note += f"; the ledger holds {held[key]} unknown row(s) here at their quote (not yet settled)"
        out.append(Difference("fal_usage", key[0], ours, theirs, bucket=key[1], timeframe=timeframe,
                              platform_units=q, unit=unit or None, note=note).judge(tolerance))
    step = TIMEFRAMES[timeframe]
    by_endpoint: dict[str, list[Difference]] = {}
    for d in out:
        by_endpoint.setdefault(d.endpoint, []).append(d)
    for diffs in by_endpoint.values():
        i = 0
        while i + 1 < len(diffs):
            a, b = diffs[i], diffs[i + 1]
            if (b.bucket - a.bucket == step and (a.difference_usd > 0) != (b.difference_usd > 0)
                    and abs(a.difference_usd + b.difference_usd) <= tolerance.limit(a.platform_usd + b.platform_usd)):
                for d in (a, b):
                    d.drift = False
                    d.note += "; the neighbouring bucket's difference cancels it (a request on the edge of two buckets)"
                i += 2
            else:
                i += 1
    return out


def compare_with_platforms(rows: Iterable[LedgerRow], book: "PriceBook | None", usage: Usage | None,
                           since: dt.datetime, until: dt.datetime, tolerance: Tolerance = Tolerance(),
                           timeframe: str = USAGE_TIMEFRAME) -> Comparison:
    """Every difference between the ledger's rows of [since, until) and what the platforms report:
    fal's billable units per result, fal's usage per endpoint and bucket (``since`` is moved back to
    its bucket's start), BFL's cost per response. Each is judged against ``tolerance``."""
    since = bucket_start(since, timeframe)
    until = _utc(until)
    rows = list(rows)
    window = [r for r in rows if since <= _utc(r.time) < until]
    # the corrections settling an unknown row of the window count with it, whenever they were written
    settling = {r.id for r in window if r.status == "unknown"}
    inside = {r.id for r in window}
    window += [r for r in rows if r.status == "reconciled" and r.settles in settling and r.id not in inside]
    result = Comparison(since, until, tolerance, {s: SourceCheck(s) for s in SOURCES})
    diffs = fal_unit_differences(window, book, result.checks["fal_units"])
    diffs += platform_cost_differences(window, "bfl", "bfl_cost", result.checks["bfl_cost"])
    for d in diffs:
        d.judge(tolerance)
    if usage is None:
        result.checks["fal_usage"].skipped = "no fal platform to ask"
    else:
        diffs += usage_differences(window, usage, since, until, timeframe, tolerance, result.checks["fal_usage"])
    order = {s: i for i, s in enumerate(SOURCES)}
    diffs.sort(key=lambda d: (not d.drift, order.get(d.source, 9), d.endpoint, d.bucket or since, d.row_id or ""))
    result.differences = diffs
    return result


def _money(d: Decimal, sign: bool = False) -> str:
    """$0.005, -$0.01, +$0.05 (``sign``): to the millionth of a dollar, at least to the cent."""
    digits = f"{abs(d):.6f}".rstrip("0")
    whole, _, cents = digits.partition(".")
    text = f"{whole}.{cents.ljust(2, '0')}"
    return f"{'-' if d < 0 else '+' if sign and d > 0 else ''}${text}"


def format_comparison(c: Comparison, limit: int = 20) -> str:
    """What a person reads: the differences, drift first (those within the tolerance past ``limit``
    are counted, not listed), then per source what was compared, how many differ and by how much."""
    lines = [f"ledger vs platforms, {c.since:%Y-%m-%d %H:%M} to {c.until:%Y-%m-%d %H:%M} UTC "
             f"(drift: a difference above {c.tolerance}):"]
    drift = c.drift
    shown = drift + [d for d in c.differences if not d.drift][:limit]
    for d in shown:
        where = f"{d.bucket:%Y-%m-%d %H:%M} ({d.timeframe})" if d.bucket is not None else f"row {d.row_id}"
        lines.append(f"  {'DRIFT' if d.drift else 'ok   '} {d.source:<9} {d.endpoint}  {where}  "
                     f"ledger {_money(d.ledger_usd)}  platform {_money(d.platform_usd)}  "
                     f"difference {_money(d.difference_usd, sign=True)}  ({d.note})")
    if hidden := len(c.differences) - len(shown):
        lines.append(f"  ... and {hidden} more within the tolerance (all in the reconciliation table)")
    if not c.differences:
        lines.append("  no differences")
    table = [("source", "compared", "differences", "drift", "difference", "drift USD")]
    notes = []
    for source, check in c.checks.items():
        if check.error or check.skipped:
            notes.append(f"  {source:<9}  not compared: {check.error or check.skipped}")
            continue
        mine = [d for d in c.differences if d.source == source]
        flagged = [d for d in mine if d.drift]
        table.append((source, f"{check.compared} {check.of}", str(len(mine)), str(len(flagged)),
                      _money(sum((d.difference_usd for d in mine), Decimal(0)), sign=True),
                      _money(sum((d.difference_usd for d in flagged), Decimal(0)), sign=True)))
    if len(table) > 1:
        widths = [max(len(r[i]) for r in table) for i in range(6)]
        lines += ["  " + "  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
                  for r in table]
    lines += notes
    lines.append(f"{len(c.differences)} difference(s), {len(drift)} drift "
                 f"({_money(sum((d.difference_usd for d in drift), Decimal(0)), sign=True)})")
    return "\n".join(lines)


# -- the reconciliation file: every run's differences, append-only -----------------------------------------
def record_differences(path: "Path", comparison: Comparison, run_id: str, checked_at: dt.datetime) -> int:
    """Append the comparison's differences to ``path`` (one JSON object a line, in one write,
    fsynced); the cost tables read the file whole into `reconciliation`. How many were written."""
    if not comparison.differences:
        return 0
    data = "".join(json.dumps(d.to_json(run_id, checked_at), separators=(",", ":")) + "\n"
                   for d in comparison.differences).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        if f.seek(0, os.SEEK_END) and not _ends_with_newline(path):  # a torn last line stays apart
            data = b"\n" + data
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return len(comparison.differences)


def _ends_with_newline(path: "Path") -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


MAX_RECONCILIATION_USD = Decimal(10) ** 9  # a money value beyond this is no difference the table can hold


def read_differences(path: "Path") -> tuple[list[tuple], list[str]]:
    """The reconciliation file's records as tuples in RECONCILIATION_COLUMNS order, and a problem per
    line that is not one (named by line; it is left out)."""
    if not path.is_file():
        return [], []
    rows, problems = [], []
    money = ("ledger_usd", "platform_usd", "difference_usd", "tolerance_usd")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:  # the cost tables are still built, without it
        return [], [f"{path}: cannot be read ({e.strerror or e}); the reconciliation table is left empty"]
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not isinstance(data, dict) or not data.get("source") or not data.get("checked_at"):
                raise ValueError("not a reconciliation record")
            dt.datetime.fromisoformat(data["checked_at"])
            if data.get("bucket"):
                dt.datetime.fromisoformat(data["bucket"])
            for k in (*money, "ledger_units", "platform_units"):
                if data.get(k) is not None and not abs(Decimal(str(data[k]))) < MAX_RECONCILIATION_USD:
                    raise ValueError(f"{k} out of range")
            if not isinstance(data.get("drift"), bool):
                raise ValueError("drift is not true or false")
        except (ValueError, ArithmeticError, TypeError) as e:
            problems.append(f"{path}:{n}: not a reconciliation record ({str(e)[:80]}); left out")
            continue
        rows.append(tuple(data.get(c) for c in RECONCILIATION_COLUMNS))
    return rows, problems
