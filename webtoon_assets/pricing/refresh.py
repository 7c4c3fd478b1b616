"""`webtoon prices refresh`: the price book against fal's price list.

fal's platform API answers ``GET {api}/models/pricing?endpoint_id=…`` (several ids per call) with
each endpoint's billing ``unit`` and ``unit_price`` (BRIEF.md, "fal: concurrency, billing, platform
APIs"). Each ``platform: fal`` entry of the price book is compared with it in the unit its rule
measures:

=====================  ======================  ============================================
rule                   fal's unit              compared field
=====================  ======================  ============================================
per_megapixel          megapixels              usd_per_mp
first_mp_plus_extra    megapixels              usd_first_mp (usd_extra_mp: check by hand)
per_image              image(s)                usd_per_image (resolution tiers: by hand)
per_second             second(s)               usd_per_second (one tier; several: by hand)
per_minute             minute(s)               usd_per_minute
per_call               call / request          usd_per_call
per_step               step(s)                 usd_per_step
per_token, video_...   token(s), 1M tokens     usd_per_million_tokens (per million)
=====================  ======================  ============================================

A **unit change** (the rule measures something else than fal now bills: megapixels against
images, seconds against videos, ...) is never written: the rule itself must be edited. With
``write=True`` only changed prices are written, each with its entry's ``read:`` (today) and
``source:`` (the pricing API's URL), by editing the YAML text in place (the exact characters of
those three values; every other byte of the hand-written file stays), atomically, and only after
the result loads as a price book.

The platform API's address is resolved as ``FalPlatform`` resolves it: ``WEBTOON_FAL_API_URL``,
else ``WEBTOON_FAL_BASE_URL`` + ``/v1`` (the loopback fake), else https://api.fal.ai/v1. HTTP goes
through httpx, which honours ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Sequence
from urllib.parse import quote

import httpx
import yaml

from webtoon_assets.files import atomic_path
from webtoon_assets.pricing.book import PriceBook, PriceEntry, load_pricebook

DEFAULT_API_URL = "https://api.fal.ai/v1"
CHUNK = 50  # endpoint ids per pricing call (a query string stays short)
TIMEOUT_SECONDS = 30
MAX_PAGES = 1000  # a cursor that never ends is fal's bug, not a reason to loop forever


# -- fal's platform API -------------------------------------------------------------------------------
class PlatformError(RuntimeError):
    """fal's platform API could not answer (no key, unreachable, refused the key, a broken answer):
    a message for a person, never holding the key."""


class _NotFound(PlatformError):
    pass


def fal_api_url(base_url: str | None = None) -> str:
    """``WEBTOON_FAL_API_URL``, else ``base_url`` (default ``WEBTOON_FAL_BASE_URL``) + ``/v1``,
    else fal's own platform API."""
    if explicit := os.environ.get("WEBTOON_FAL_API_URL"):
        return explicit.rstrip("/")
    base = (base_url if base_url is not None else os.environ.get("WEBTOON_FAL_BASE_URL") or "").rstrip("/")
    return f"{base}/v1" if base else DEFAULT_API_URL


def get_json(http: httpx.Client, url: str, params: Sequence[tuple[str, str]], what: str, key_name: str
             ) -> dict[str, Any]:
    """One GET of fal's platform API as a dict (numbers as Decimal), or PlatformError saying what
    went wrong; ``_NotFound`` for a 404."""
    try:
        answer = http.get(url, params=list(params))
    except httpx.TimeoutException as e:
        raise PlatformError(f"{what}: fal did not answer in time ({url}; {type(e).__name__})") from None
    except httpx.TransportError as e:
        raise PlatformError(f"{what}: fal could not be reached ({url}; {type(e).__name__}: {e})") from None
    if answer.status_code in (401, 403):
        raise PlatformError(f"{what}: fal refused the key ({answer.status_code} from {url}): check {key_name}")
    if answer.status_code == 404:
        raise _NotFound(f"{what}: 404 from {url}")
    if answer.status_code >= 400:
        raise PlatformError(f"{what}: fal answered {answer.status_code} from {url}: {answer.text[:200]!r}")
    try:
        data = json.loads(answer.text, parse_float=Decimal)
    except ValueError:
        raise PlatformError(f"{what}: fal's answer from {url} is not JSON: {answer.text[:200]!r}") from None
    if not isinstance(data, dict):
        raise PlatformError(f"{what}: fal's answer from {url} is not a JSON object")
    return data


def pages(http: httpx.Client, url: str, params: Sequence[tuple[str, str]], what: str, key_name: str
          ) -> Iterator[dict[str, Any]]:
    """Every page of a paginated answer (``next_cursor``/``has_more``)."""
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = get_json(http, url, [*params, *([("cursor", cursor)] if cursor else [])], what, key_name)
        yield page
        cursor = page.get("next_cursor")
        if not page.get("has_more") or not cursor:
            return
    raise PlatformError(f"{what}: more than {MAX_PAGES} pages from {url}; stopped")


def chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield list(items[i:i + size])


def _decimal(value: Any, what: str) -> Decimal:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise PlatformError(f"{what}: expected a number, got {value!r}") from None
    if not d.is_finite():
        raise PlatformError(f"{what}: expected a number, got {value!r}")
    return d


@dataclass(frozen=True)
class FalPrice:
    endpoint: str
    unit_price: Decimal
    unit: str
    currency: str


def fetch_prices(endpoints: Iterable[str], key: str, api_url: str, chunk: int = CHUNK,
                 timeout: float = TIMEOUT_SECONDS) -> dict[str, FalPrice]:
    """fal's price of each endpoint it knows (absent: fal does not know it). Endpoints are asked
    ``chunk`` at a time; a chunk fal answers 404 is asked again one endpoint at a time."""
    if not key:
        raise PlatformError("FAL_KEY is not set: fal's pricing API needs the account's key")
    wanted = list(dict.fromkeys(endpoints))
    url = f"{api_url}/models/pricing"
    found: dict[str, FalPrice] = {}

    def ask(part: list[str]) -> None:
        for page in pages(http, url, [("endpoint_id", e) for e in part], "fal's pricing API", "FAL_KEY"):
            for p in page.get("prices") or []:
                if not isinstance(p, dict) or p.get("endpoint_id") not in part:
                    continue
                ep = p["endpoint_id"]
                found[ep] = FalPrice(ep, _decimal(p.get("unit_price"), f"fal's unit_price of {ep}"),
                                     str(p.get("unit") or ""), str(p.get("currency") or "USD"))

    with httpx.Client(timeout=timeout, headers={"Authorization": f"Key {key}"}) as http:
        for part in chunks(wanted, chunk):
            try:
                ask(part)
            except _NotFound:
                for endpoint in part if len(part) > 1 else []:
                    try:
                        ask([endpoint])
                    except _NotFound:
                        pass
    return found


# -- units ----------------------------------------------------------------------------------------------
_UNIT_NAMES = {
    "megapixel": "megapixel", "mp": "megapixel", "mps": "megapixel", "mpx": "megapixel",
    "image": "image", "img": "image",
    "second": "second", "sec": "second",
    "minute": "minute", "min": "minute",
    "call": "call", "request": "call",
    "step": "step", "training step": "step",
    "token": "token",
}
_SCALE = {"k": Decimal(1000), "thousand": Decimal(1000), "m": Decimal(1_000_000), "million": Decimal(1_000_000)}


def fal_unit(raw: str) -> tuple[str, Decimal]:
    """fal's billing unit as (what is counted, how many of it the unit price buys): ``megapixels``
    → ("megapixel", 1), ``1M tokens`` → ("token", 1000000). A unit not known here keeps its name
    (singular), so it compares unequal to every rule's."""
    words = re.sub(r"^(per\s+|/\s*)", "", raw.strip().lower()).split()
    count = Decimal(1)
    if words and (m := re.fullmatch(r"(\d+(?:\.\d+)?)(k|m)?", words[0])):
        count, words = Decimal(m[1]) * _SCALE.get(m[2] or "", Decimal(1)), words[1:]
    if len(words) > 1 and words[0] in _SCALE:
        count, words = count * _SCALE[words[0]], words[1:]
    name = " ".join(words)
    singular = name[:-1] if name.endswith("s") and len(name) > 3 else name
    return _UNIT_NAMES.get(name, _UNIT_NAMES.get(singular, singular)), count


# -- the book's side ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measure:
    """What an entry's rule charges per unit, in the unit fal would bill it in."""

    unit: str  # what the rule counts (megapixel, image, second, ...)
    path: tuple[str | int, ...]  # the compared value inside `price:`
    value: Decimal  # the book's value there
    scale: Decimal = Decimal(1)  # the value is the price of `scale` units (per million tokens: 10^6)
    writable: bool = True
    hint: str = ""  # what a person should check by hand beside it

    @property
    def per_unit(self) -> Decimal:
        return self.value / self.scale

    @property
    def label(self) -> str:
        return f"per million {self.unit}s" if self.scale == 1_000_000 else f"per {self.unit}"


_SIMPLE = {  # rule -> (unit, field, scale)
    "per_megapixel": ("megapixel", "usd_per_mp", 1),
    "first_mp_plus_extra": ("megapixel", "usd_first_mp", 1),
    "per_image": ("image", "usd_per_image", 1),
    "per_call": ("call", "usd_per_call", 1),
    "per_minute": ("minute", "usd_per_minute", 1),
    "per_step": ("step", "usd_per_step", 1),
    "per_token": ("token", "usd_per_million_tokens", 1_000_000),
    "video_tokens": ("token", "usd_per_million_tokens", 1_000_000),
}


def measure(entry: PriceEntry) -> Measure | None:
    """The entry's comparable price, or None for a rule kind this does not know."""
    rule = entry.price
    kind = getattr(rule, "rule", "")
    if kind == "per_second":
        tiers = list(rule.tiers)
        if len(tiers) == 1:
            return Measure("second", ("tiers", 0, "usd_per_second"), tiers[0].usd_per_second)
        res, audio = rule.default_resolution, rule.default_audio
        index = next((i for i, t in enumerate(tiers) if (t.resolution is None or t.resolution == res)
                      and (t.audio is None or t.audio == audio)), 0)
        t = tiers[index]
        label = ", ".join(x for x in (t.resolution or "", {True: "audio", False: "no audio"}.get(t.audio, "")) if x)
        return Measure("second", ("tiers", index, "usd_per_second"), t.usd_per_second, writable=False,
                       hint=f"{len(tiers)} tiers and fal lists one price (compared with the default tier"
                            f"{f', {label}' if label else ''}): edit the tiers by hand")
    if kind not in _SIMPLE:
        return None
    unit, name, scale = _SIMPLE[kind]
    value = getattr(rule, name)
    hint = ""
    if kind == "first_mp_plus_extra":
        hint = f"fal lists the first megapixel's price: check usd_extra_mp (${rule.usd_extra_mp}) by hand"
    elif kind == "per_image" and getattr(rule, "tiers", None):
        hint = f"fal lists one price: check the {rule.tier_field} tiers {dict(rule.tiers)} by hand"
    elif kind == "per_token" and getattr(rule, "usd_per_million_output_tokens", None) is not None:
        hint = (f"fal lists one price: check usd_per_million_output_tokens "
                f"(${rule.usd_per_million_output_tokens}) by hand")
    return Measure(unit, (name,), value, Decimal(scale), hint=hint)


# -- comparing ------------------------------------------------------------------------------------------
Status = Literal["same", "changed", "unit_change", "unknown", "not_compared"]


@dataclass
class PriceCheck:
    endpoint: str
    status: Status
    measure: Measure | None = None
    fal: FalPrice | None = None
    new: Decimal | None = None  # the new value of the compared field (status changed)
    note: str = ""
    written: bool = False

    @property
    def old(self) -> Decimal | None:
        return self.measure.value if self.measure else None

    @property
    def writable(self) -> bool:
        return self.status == "changed" and self.measure is not None and self.measure.writable


def compare(entry: PriceEntry, fal: FalPrice | None) -> PriceCheck:
    m = measure(entry)
    if fal is None:
        return PriceCheck(entry.endpoint, "unknown", m, note="unknown to fal")
    if m is None:
        return PriceCheck(entry.endpoint, "not_compared", None, fal,
                          note=f"rule {getattr(entry.price, 'rule', '?')!r} has no single price to compare")
    if fal.currency.upper() != "USD":
        return PriceCheck(entry.endpoint, "not_compared", m, fal, note=f"fal prices it in {fal.currency}, not USD")
    unit, count = fal_unit(fal.unit)
    if unit != m.unit:
        return PriceCheck(entry.endpoint, "unit_change", m, fal, note=(
            f"UNIT CHANGE: the book's rule {entry.price.rule} counts {m.unit}s, fal now bills per "
            f"{fal.unit!r} (${_plain(fal.unit_price)}): edit the entry's price rule by hand "
            f"(not written)"))
    new = fal.unit_price / count * m.scale
    if new == m.value:
        return PriceCheck(entry.endpoint, "same", m, fal)
    note = m.hint
    if not m.writable:
        note = f"not written: {m.hint}"
    return PriceCheck(entry.endpoint, "changed", m, fal, new=new, note=note)


def _plain(d: Decimal) -> str:
    """A Decimal as plain digits: 0.0050 -> 0.005, 1E+1 -> 10."""
    return format(d.normalize(), "f")


def is_retired(entry: PriceEntry, today: dt.date) -> bool:
    retired = getattr(entry, "retired", None)
    return retired is not None and retired <= today


# -- editing the book in place --------------------------------------------------------------------------
class BookEditError(RuntimeError):
    """The book could not be edited as asked (its text is not as expected, or the result is not a book)."""


def _mapping_get(node: yaml.Node, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return v
    return None


def _scalar(node: yaml.Node | None, where: str) -> yaml.ScalarNode:
    if not isinstance(node, yaml.ScalarNode):
        raise BookEditError(f"{where}: expected a single value in the book")
    return node


def _styled(value: str, like: yaml.ScalarNode) -> str:
    """``value`` written as the value it replaces was: double-quoted, single-quoted or plain."""
    if like.style == '"':
        return json.dumps(value)
    if like.style == "'":
        return "'" + value.replace("'", "''") + "'"
    return value


def pricing_url(api_url: str, endpoint: str) -> str:
    """Where the price was read: the pricing API's URL for the endpoint (its slashes kept readable)."""
    return f"{api_url}/models/pricing?endpoint_id={quote(endpoint, safe='/')}"


def edit_book_text(text: str, changes: Sequence[PriceCheck], api_url: str, today: dt.date) -> str:
    """The book's text with each change's price, ``read:`` and ``source:`` replaced: the exact
    characters of those values, found by the YAML parser's marks; nothing else moves."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise BookEditError(f"the price book is not YAML: {e}") from None
    entries = _mapping_get(root, "entries")
    if not isinstance(entries, yaml.SequenceNode):
        raise BookEditError("the price book has no `entries:` list")
    by_endpoint: dict[str, yaml.MappingNode] = {}
    for node in entries.value:
        ep = _mapping_get(node, "endpoint")
        if isinstance(ep, yaml.ScalarNode):
            by_endpoint[ep.value] = node
    spans: list[tuple[int, int, str]] = []
    for c in changes:
        assert c.measure is not None and c.new is not None
        node = by_endpoint.get(c.endpoint)
        if node is None:
            raise BookEditError(f"{c.endpoint}: no such entry in the book's text")
        target: yaml.Node | None = _mapping_get(node, "price")
        for step in c.measure.path:
            if isinstance(step, int):
                target = target.value[step] if isinstance(target, yaml.SequenceNode) and step < len(target.value) \
                    else None
            else:
                target = _mapping_get(target, step) if target is not None else None
        where = f"{c.endpoint}: price.{'.'.join(str(s) for s in c.measure.path)}"
        price = _scalar(target, where)
        read = _scalar(_mapping_get(node, "read"), f"{c.endpoint}: read")
        source = _scalar(_mapping_get(node, "source"), f"{c.endpoint}: source")
        url = pricing_url(api_url, c.endpoint)
        spans += [(price.start_mark.index, price.end_mark.index, _styled(_plain(c.new), price)),
                  (read.start_mark.index, read.end_mark.index, _styled(today.isoformat(), read)),
                  (source.start_mark.index, source.end_mark.index,
                   _styled(url, source) if source.style == "'" else json.dumps(url))]
    spans.sort()
    for (s1, e1, _), (s2, _e2, _) in zip(spans, spans[1:]):
        if s2 < e1:
            raise BookEditError("two edits overlap in the book's text")
    for start, end, new in reversed(spans):
        text = text[:start] + new + text[end:]
    return text


def write_book(path: Path, original: str, changes: Sequence[PriceCheck], api_url: str, today: dt.date) -> None:
    """Write the changes into the book at ``path`` atomically, after the new text loads as a price
    book holding exactly the new prices; the book is left as it was if anything is wrong."""
    new_text = edit_book_text(original, changes, api_url, today)
    with atomic_path(path, suffix=path.suffix) as tmp:
        tmp.write_text(new_text, encoding="utf-8")
        try:
            book = load_pricebook(tmp)
        except Exception as e:  # noqa: BLE001 - a BibleError, or anything the loader raises: nothing is written
            raise BookEditError(f"the edited book would not load, so nothing was written: {e}") from None
        for c in changes:
            got = measure(book.entry(c.endpoint))
            if got is None or got.value != c.new or book.entry(c.endpoint).read != today:
                raise BookEditError(f"{c.endpoint}: the edit did not land where expected; nothing was written")
        if path.read_text(encoding="utf-8") != original:
            raise BookEditError(f"{path} changed while it was being refreshed; nothing was written: run again")


# -- the whole refresh ----------------------------------------------------------------------------------
@dataclass
class Refresh:
    path: Path
    api_url: str
    checks: list[PriceCheck] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    written: bool = False

    def of(self, *statuses: Status) -> list[PriceCheck]:
        return [c for c in self.checks if c.status in statuses]

    @property
    def outstanding(self) -> list[PriceCheck]:
        """What still differs in the book: changes not written, and unit changes."""
        return [c for c in self.checks if c.status == "unit_change" or (c.status == "changed" and not c.written)]


def refresh_prices(path: Path, key: str, api_url: str | None = None, write: bool = False,
                   today: dt.date | None = None, chunk: int = CHUNK) -> Refresh:
    """Compare every fal entry of the book at ``path`` with fal's price list; with ``write``, write
    the changed prices that can be written (never a unit change)."""
    api_url = (api_url or fal_api_url()).rstrip("/")
    today = today or dt.date.today()
    original = path.read_text(encoding="utf-8")
    book: PriceBook = load_pricebook(path)
    result = Refresh(path, api_url)
    entries = []
    for e in book.entries:
        if e.platform != "fal":
            continue
        if is_retired(e, today):
            result.retired.append(e.endpoint)
        else:
            entries.append(e)
    prices = fetch_prices([e.endpoint for e in entries], key, api_url, chunk=chunk)
    result.checks = [compare(e, prices.get(e.endpoint)) for e in entries]
    todo = [c for c in result.checks if c.writable]
    if write and todo:
        write_book(path, original, todo, api_url, today)
        for c in todo:
            c.written = True
        result.written = True
    return result


def format_refresh(r: Refresh, show_all: bool = False) -> str:
    """The diff table: endpoint, old -> new price, unit, what to do."""
    def price(value: Decimal | None, m: Measure | None) -> str:
        return "-" if value is None or m is None else f"${_plain(value)}"

    rows = [("endpoint", "book", "fal", "unit", "")]
    order = {"unit_change": 0, "changed": 1, "not_compared": 2, "unknown": 3, "same": 4}
    for c in sorted(r.checks, key=lambda c: order[c.status]):
        if c.status == "same" and not show_all:
            continue
        m = c.measure
        if c.status == "changed":
            what = ("written" if c.written else "CHANGED") + (f"; {c.note}" if c.note else "")
            rows.append((c.endpoint, price(c.old, m), f"-> ${_plain(c.new)}", m.label, what))
        elif c.status == "unit_change":
            rows.append((c.endpoint, price(c.old, m), f"${_plain(c.fal.unit_price)}",
                         f"{m.label} -> per {c.fal.unit}", c.note))
        elif c.status == "same":
            rows.append((c.endpoint, price(c.old, m), "same", m.label if m else "", ""))
        else:
            rows.append((c.endpoint, price(c.old, m), "-" if c.fal is None else f"${_plain(c.fal.unit_price)}",
                         m.label if m else (c.fal.unit if c.fal else ""), c.note))
    lines = [f"price book {r.path} against fal's pricing API ({r.api_url}/models/pricing):"]
    if len(rows) > 1:
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(row[:4], widths)) + (f"  {row[4]}" if row[4] else "")
                  for row in rows]
    same, changed = r.of("same"), r.of("changed")
    written = [c for c in changed if c.written]
    parts = [f"{len(r.checks)} fal endpoint(s): {len(same)} same", f"{len(changed)} changed"
             + (f" ({len(written)} written)" if written else ""),
             f"{len(r.of('unit_change'))} unit change(s)", f"{len(r.of('unknown'))} unknown to fal"]
    if r.of("not_compared"):
        parts.append(f"{len(r.of('not_compared'))} not compared")
    if r.retired:
        parts.append(f"{len(r.retired)} retired (not asked)")
    lines.append(", ".join(parts))
    if written:
        lines.append(f"wrote {len(written)} price(s) to {r.path} (each with read: today and source: the pricing API)")
    elif [c for c in changed if c.writable]:
        lines.append("nothing written: run `webtoon prices refresh --write` to write the changed prices")
    if unit_changes := r.of("unit_change"):
        lines.append("unit changes are never written: edit these entries' price rules by hand: "
                     + ", ".join(c.endpoint for c in unit_changes))
    return "\n".join(lines)
