"""The generation gateway: the one path every image takes.

    cache ─► budget ─► provider ─► store ─► ledger

Assets describe what to make (a GenerationRequest); the gateway decides whether to pay. A
request whose key is in the store, whole, is a hit and costs nothing. Otherwise it takes the
key's cross-process lock, checks again (another run may have just made it), reserves the quote
against the shared budgets, and only then calls the provider, so two runs needing the same image
pay once. Every attempt, whatever its outcome, is a ledger row written the moment it ends.

Money rules kept here:
- a paid submission is journalled (intent, then handle) and its entry retired only after its
  ledger row is written, so a crash at any point is resumed, or recorded as ``unknown``;
- a provider request id is billed at most once in the ledger, however often its result is
  fetched (a resumed request already billed by an earlier row is recorded at $0);
- an ambiguous submission is an ``unknown`` row, priced at its quote, never a silent retry;
- a damaged stored image is quarantined and fetched again from the provider at no charge where it
  still has it, else made again as a new, recorded attempt; a lost record is rebuilt from the image
  and the ledger instead of paying again.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import AbstractContextManager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from PIL import Image

from webtoon_assets.gateway.budget import Budgets, BudgetExceeded
from webtoon_assets.gateway.providers import Providers
from webtoon_assets.gateway.providers.base import Provider, ProviderError
from webtoon_assets.gateway.retry import GenerationFailed, AttemptPolicy
from webtoon_assets.gateway.request import GenerationRequest
from webtoon_assets.gateway.store import ImageStore, sha256_file
from webtoon_assets.gateway.submissions import Submission, Submissions
from webtoon_assets.ledger import Ledger, LedgerRow, Status
from webtoon_assets.liveness import HOST
from webtoon_assets.pricing import PriceBook, Quote, quote
from webtoon_assets.sizes import ImageSizeError, requested_pixels


class _Costed:
    """What a result's ledger row says it cost: billed, and at list price."""

    row: LedgerRow

    @property
    def billed_usd(self) -> Decimal:
        return self.row.billed_usd

    @property
    def list_usd(self) -> Decimal:
        return self.row.list_usd


@dataclass(frozen=True)
class GenerationResult(_Costed):
    request: GenerationRequest
    key: str
    path: Path
    sha256: str
    status: Status
    width: int
    height: int
    provider: str
    seconds: float
    row: LedgerRow


@dataclass(frozen=True)
class TextResult:
    request: GenerationRequest
    key: str
    text: str
    status: Status
    seconds: float
    row: LedgerRow


@dataclass(frozen=True)
class FileResult(_Costed):
    """A file made through the gateway (a trained LoRA): stored content-addressed by its request key."""

    request: GenerationRequest
    key: str
    path: Path
    sha256: str
    status: Status
    provider: str
    seconds: float
    row: LedgerRow
    record: dict[str, Any]

    @property
    def stand_in(self) -> bool:
        return bool(self.record.get("stand_in"))


@dataclass(frozen=True)
class Preflight:
    """What making a set of requests would cost now: only what the store does not hold."""

    usd: Decimal
    misses: list[tuple[GenerationRequest, Decimal]]
    hits: int

    def dearest(self, n: int = 3) -> list[str]:
        top = sorted(self.misses, key=lambda m: m[1], reverse=True)[:n]
        return [f"{r.attribution.asset} {r.attribution.item} ${usd}" for r, usd in top]


def pricing_request(request: GenerationRequest) -> dict[str, Any]:
    """The request as the price rules read it: arguments plus the reference images' count and sizes."""
    out = dict(request.arguments)
    if request.references:
        out["image_urls"] = [r.role for r in request.references]
        out["input_image_sizes"] = [{"width": r.width, "height": r.height} for r in request.references
                                    if r.width and r.height]
        if len(out["input_image_sizes"]) != len(request.references):
            del out["input_image_sizes"]  # unknown sizes: each input counts as the rule's minimum
    return out


class Gateway:
    def __init__(self, store: ImageStore, provider: Provider | Providers, ledger: Ledger, pricebook: PriceBook,
                 budget: Budgets | None = None, run_id: str = "", log: Callable[[str], None] | None = None,
                 retry: AttemptPolicy | None = None,
                 locks: Callable[[str], AbstractContextManager[Any]] | None = None,
                 submissions: Submissions | None = None):
        """``locks``: a request key's lock across every process that may pay for it (the store's file
        locks unless given; a database's advisory locks across machines); ``submissions``: the journal
        of paid submissions (``<store>/pending`` unless given). gateway/coordination chooses both."""
        self.retry = retry or AttemptPolicy()
        self.store = store
        self.providers = Providers.of(provider)  # one per platform; offline, the renderer for all
        self.ledger = ledger
        self.pricebook = pricebook
        self.budget = budget
        # Rows of one run share its id (a Dagster run's, else this process's): the run cap sums them.
        self.run_id = run_id or f"process-{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if budget is not None:
            budget.run_id = self.run_id
        self.log = log or (lambda _msg: None)
        self.submissions = submissions if submissions is not None else Submissions(store.root / "pending")
        self._lock = locks if locks is not None else store.lock

    @property
    def provider(self) -> Provider:
        """The provider of requests that name no platform (offline: the renderer for every one)."""
        return self.providers.default

    def fit(self, request: GenerationRequest) -> GenerationRequest:
        """The request as its endpoint takes it (the price book's ``request:`` shape: sizes, the
        references it reads, defaults). An unknown endpoint is refused here: before any spend."""
        arguments, references = self.pricebook.entry(request.endpoint).fit(request.arguments, request.references)
        if arguments != request.arguments or references != request.references:
            request = request.model_copy(update={"arguments": arguments, "references": references})
        return request

    def provider_for(self, endpoint: str) -> Provider:
        """The provider of the endpoint's platform; refused (NoProvider) when this run has none."""
        return self.providers.for_platform(self.pricebook.entry(endpoint).platform, endpoint)

    def route(self, request: GenerationRequest) -> tuple[GenerationRequest, Provider]:
        """The request as its endpoint takes it, and the provider that makes it."""
        return self.fit(request), self.provider_for(request.endpoint)

    def key(self, request: GenerationRequest) -> str:
        """The store key of ``request`` as it would be sent."""
        fitted, provider = self.route(request)
        return fitted.key(provider.name)

    def quote(self, request: GenerationRequest, response: dict[str, Any] | None = None) -> Quote:
        """The list price of ``request`` as its endpoint takes it."""
        return self._price(self.fit(request) if self.pricebook.has(request.endpoint) else request, response)

    def _price(self, fitted: GenerationRequest, response: dict[str, Any] | None = None) -> Quote:
        """The list price of a request already fitted to its endpoint."""
        return quote(fitted.endpoint, pricing_request(fitted), response, book=self.pricebook)

    def _record(self, request: GenerationRequest, key: str, status: Status, q: Quote, billed: Decimal,
                width: int | None = None, height: int | None = None, request_id: str | None = None,
                error: str | None = None, billable_units: Decimal | None = None, note: str | None = None,
                provider: Provider | None = None) -> LedgerRow:
        who = request.attribution
        row = LedgerRow(
            time=dt.datetime.now(dt.timezone.utc), run_id=self.run_id, series=who.series, episode=who.episode,
            asset=who.asset, item=who.item, reusable=who.reusable, provider=(provider or self.provider).name,
            endpoint=request.endpoint, request_key=key, status=status, billed_usd=billed, list_usd=q.usd,
            credits=billed * self.pricebook.credits_per_usd if billed else q.credits, units=q.units, unit=q.unit,
            megapixels=q.megapixels, images=q.images, seconds=q.seconds, width=width, height=height,
            inputs=[(r.width, r.height) for r in request.references if r.width and r.height],
            provider_request_id=request_id, billable_units=billable_units, error=error, note=note,
        )
        self.ledger.append(row)
        return row

    # -- images ------------------------------------------------------------------------------------
    def generate(self, request: GenerationRequest) -> GenerationResult:
        started = time.monotonic()
        request, provider = self.route(request)
        key = request.key(provider.name)
        found = self.store.lookup(key)
        if found.state == "ok":
            return self._hit(request, key, found.record, started, provider)
        with self._lock(key):
            found = self.store.lookup(key)  # another run may have made or mended it while we waited
            if found.state == "ok":
                return self._hit(request, key, found.record, started, provider)
            note = None
            if found.state == "unrecorded" and (record := self._rebuild_record(request, key)) is not None:
                return self._hit(request, key, record, started, provider,
                                 note="record rebuilt from the image and the ledger")
            if found.state in ("damaged", "unrecorded"):
                where = self.store.quarantine(key)
                note = f"stored copy {found.state} ({found.reason or 'no record'}); quarantined at {where}"
                self.log(f"{request.attribution.asset} {request.attribution.item}: {note}")
                if found.record is not None and (record := self._restore(request, key, found.record,
                                                                         provider)) is not None:
                    return self._hit(request, key, record, started, provider,
                                     note=f"{note}; fetched again from {provider.name} at no charge")
                note += "; made again"
            self.pricebook.usable(request.endpoint)  # a retired endpoint is refused before any spend
            estimate = self._price(request)  # unpriceable: fails before any spend
            with self.store.staging(key) as staged:
                out, row, record = self._attempts(
                    request, key, estimate, provider, lambda r, sub: provider.generate(r, staged, key, sub),
                    lambda out, final, billed, why: self._record(
                        request, key, "generated", final, billed, out.width, out.height, out.request_id,
                        billable_units=out.billable_units, note=_join(note, why, _size_note(request, out)),
                        provider=provider),
                    on_recorded=lambda out, final, billed, attempt: self.store.commit(key, staged, {
                        "provider": provider.name, "endpoint": request.endpoint,
                        "arguments": request.arguments, "sent_seed": attempt.arguments.get("seed"),
                        "references": [r.model_dump() for r in request.references],
                        "width": out.width, "height": out.height, "response": out.response,
                        "provider_request_id": out.request_id, "run_id": self.run_id,
                        "made_for": request.attribution.model_dump(), "created": time.time(),
                        "billed_usd": str(billed), "list_usd": str(final.usd),
                    }))
        return GenerationResult(request, key, self.store.image_path(key), record["sha256"], "generated",
                                out.width, out.height, provider.name, time.monotonic() - started, row)

    def _hit(self, request: GenerationRequest, key: str, record: dict, started: float, provider: Provider,
             note: str | None = None) -> GenerationResult:
        row = self._record(request, key, "cached", self._price(request), Decimal(0), record["width"], record["height"],
                           note=note, provider=provider)
        return GenerationResult(request, key, self.store.image_path(key), record["sha256"], "cached",
                                record["width"], record["height"], provider.name,
                                time.monotonic() - started, row)

    def _restore(self, request: GenerationRequest, key: str, record: dict, provider: Provider) -> dict | None:
        """The provider's copy of a damaged image, at no charge, if it still has it and it is the same."""
        with self.store.staging(key) as staged:
            try:
                if not provider.refetch(request, record, staged) or sha256_file(staged) != record["sha256"]:
                    return None
            except Exception as e:  # noqa: BLE001 - a failed re-fetch just means making it again
                self.log(f"re-fetching {key[:12]} failed: {type(e).__name__}: {e}")
                return None
            return self.store.commit(key, staged, {k: v for k, v in record.items() if k not in ("sha256", "bytes")})

    def _rebuild_record(self, request: GenerationRequest, key: str) -> dict | None:
        """A stored image whose record was lost: its ledger row says what it was and what it cost."""
        made = [r for r in self.ledger.find(key) if r.request_key == key and r.status == "generated"]
        image = self.store.image_path(key)
        if not made:
            return None
        try:
            with Image.open(image) as im:
                im.load()
                width, height = im.size
        except Exception:  # noqa: BLE001 - an unreadable image is quarantined and made again
            return None
        last = made[-1]
        if (last.width, last.height) != (width, height):
            return None
        return self.store.write_record(key, {
            "key": key, "provider": last.provider, "endpoint": last.endpoint, "arguments": request.arguments,
            "references": [r.model_dump() for r in request.references], "width": width, "height": height,
            "provider_request_id": last.provider_request_id, "run_id": last.run_id, "billed_usd": str(last.billed_usd),
            "list_usd": str(last.list_usd), "made_for": request.attribution.model_dump(), "created": time.time(),
            "rebuilt_from_ledger_row": last.id, "sha256": sha256_file(image), "bytes": image.stat().st_size,
        })

    # -- text ----------------------------------------------------------------------------------------
    def generate_text(self, request: GenerationRequest) -> TextResult:
        """The same path for a text model's answer: cached by key, priced per token, in the ledger."""
        started = time.monotonic()
        request, provider = self.route(request)
        key = request.key(provider.name)
        if (record := self.store.get_text(key)) is None:
            with self._lock(key):
                if (record := self.store.get_text(key)) is None:
                    self.pricebook.usable(request.endpoint)
                    estimate = self._price(request)
                    out, row, _ = self._attempts(
                        request, key, estimate, provider, lambda r, sub: provider.generate_text(r, key, sub),
                        lambda out, final, billed, why: self._record(request, key, "generated", final, billed,
                                                                     request_id=out.request_id, note=why,
                                                                     provider=provider),
                        on_recorded=lambda out, final, billed, attempt: self.store.commit_text(key, {
                            "text": out.text, "provider": provider.name, "endpoint": request.endpoint,
                            "response": out.response, "provider_request_id": out.request_id, "run_id": self.run_id,
                            "billed_usd": str(billed), "list_usd": str(final.usd)}))
                    return TextResult(request, key, out.text, "generated", time.monotonic() - started, row)
        row = self._record(request, key, "cached", self._price(request, record.get("response")), Decimal(0),
                           provider=provider)
        return TextResult(request, key, record["text"], "cached", time.monotonic() - started, row)

    # -- files ---------------------------------------------------------------------------------------
    def generate_file(self, request: GenerationRequest, suffix: str = ".safetensors") -> FileResult:
        """The same path for a file result (a training run's weights): cached by key, budget-reserved,
        journalled, a ledger row per attempt, stored with its record; a damaged copy is made again."""
        started = time.monotonic()
        request, provider = self.route(request)
        key = request.key(provider.name)
        note = None
        found = self.store.lookup_file(key, suffix)
        if found.state != "ok":
            with self._lock(key):
                found = self.store.lookup_file(key, suffix)
                if found.state != "ok":
                    if found.state in ("damaged", "unrecorded"):
                        where = self.store.quarantine_file(key, suffix)
                        note = f"stored copy {found.state} ({found.reason or 'no record'}); quarantined at {where}; made again"
                        self.log(f"{request.attribution.asset} {request.attribution.item}: {note}")
                    make = getattr(provider, "generate_file", None)
                    if make is None:
                        raise GenerationFailed(f"{provider.name} cannot make files ({request.endpoint})")
                    self.pricebook.usable(request.endpoint)
                    estimate = self._price(request)
                    with self.store.staging(key) as staged:
                        out, row, record = self._attempts(
                            request, key, estimate, provider, lambda r, sub: make(r, staged, key, sub),
                            lambda out, final, billed, why: self._record(
                                request, key, "generated", final, billed, request_id=out.request_id,
                                billable_units=out.billable_units, provider=provider,
                                note=_join(note, why, "offline stand-in file, not trained weights"
                                           if out.stand_in else None)),
                            on_recorded=lambda out, final, billed, attempt: self.store.commit_file(key, staged, {
                                "provider": provider.name, "endpoint": request.endpoint,
                                "arguments": request.arguments, "stand_in": out.stand_in,
                                "training_data": request.training_data.model_dump() if request.training_data else None,
                                "response": out.response, "provider_request_id": out.request_id,
                                "run_id": self.run_id, "made_for": request.attribution.model_dump(),
                                "created": time.time(), "billed_usd": str(billed), "list_usd": str(final.usd),
                            }, suffix))
                    return FileResult(request, key, self.store.file_path(key, suffix), record["sha256"], "generated",
                                      provider.name, time.monotonic() - started, row, record)
        row = self._record(request, key, "cached", self._price(request), Decimal(0), provider=provider)
        return FileResult(request, key, self.store.file_path(key, suffix), found.record["sha256"], "cached",
                          provider.name, time.monotonic() - started, row, found.record)

    # -- attempts ------------------------------------------------------------------------------------
    def _attempts(self, request: GenerationRequest, key: str, estimate: Quote, provider: Provider,
                  call: Callable[[GenerationRequest, Submission], Any],
                  record_success: Callable[[Any, Quote, Decimal, str | None], LedgerRow],
                  on_recorded: Callable[[Any, Quote, Decimal, GenerationRequest], Any]
                  ) -> tuple[Any, LedgerRow, Any]:
        """Call the provider until it succeeds or the policy gives up; a ledger row per attempt,
        written before the result is stored and before the journal entry is retired. Returns the
        provider's output, the success row and what ``on_recorded`` stored."""
        who = request.attribution
        sub = self.submissions.open(key)
        if (orphan := sub.orphaned_intent) is not None:  # an earlier process died while submitting
            self._record(request, key, "unknown", estimate, estimate.usd, provider=provider, error=(
                f"a run crashed while submitting this request (intent of {_when(orphan)}); {provider.name} may "
                "have queued and billed it: outcome unknown until `webtoon reconcile`"))
            sub.retire()
        tries = nsfw = 0
        attempt = request
        while True:
            reservation = self._reserve(attempt, key, estimate)
            try:
                with self.providers.slot(provider):
                    out = call(attempt, sub)
            except Exception as e:
                err = e if isinstance(e, ProviderError) else ProviderError(
                    f"{type(e).__name__}: {e}", retryable=False, billed=False)
                self._failed(request, key, estimate, err, sub, provider)
                self._release(reservation)
                tries += 1
                if err.unknown:
                    raise GenerationFailed(
                        f"{who.asset} {who.item} of {who.series}/{who.episode}: the outcome of the paid request on "
                        f"{request.endpoint} is unknown and it was not sent again ({err}). It is counted at its quote "
                        f"${estimate.usd}; run `webtoon reconcile` to settle it. A re-run asks anew.") from None
                if err.nsfw and err.retryable and nsfw < self.retry.nsfw_retries:
                    nsfw += 1  # the same request with another seed; the stored key stays the original
                    seed = int(request.arguments.get("seed", 0))
                    attempt = request.model_copy(update={"arguments": {**request.arguments,
                                                                       "seed": (seed + 7919 * nsfw) & 0x7FFFFFFF}})
                    continue
                if err.retryable and not err.nsfw and tries < self.retry.attempts:
                    time.sleep(self.retry.delay(tries))
                    continue
                raise GenerationFailed(
                    f"{who.asset} {who.item} of {who.series}/{who.episode} failed after {tries} attempt(s) on "
                    f"{request.endpoint}: {err}") from (e if not isinstance(e, ProviderError) else None)
            final = self._price(attempt, getattr(out, "response", None))
            billed = final.usd if out.billed else Decimal(0)
            why = None
            if out.billed and (reported := getattr(out, "billed_usd", None)) is not None:
                billed = reported  # what the platform said it charged (BFL's cost); the quote stays the list price
                if reported != final.usd:
                    why = f"{provider.name} billed ${reported}; the price book quotes ${final.usd}"
            if billed and out.resumed and (prior := self._billed_before(out.request_id, sub)):
                billed, why = Decimal(0), _join(why, f"request {out.request_id} was already billed in ledger row {prior}")
            try:
                row = record_success(out, final, billed, why)
                stored = on_recorded(out, final, billed, attempt)
                sub.retire()
            finally:
                self._release(reservation)
            return out, row, stored

    def _failed(self, request: GenerationRequest, key: str, estimate: Quote, err: ProviderError,
                sub: Submission, provider: Provider) -> None:
        """One row for a failed attempt: unknown (held at its quote), billed, or free."""
        status: Status = "unknown" if err.unknown else "failed"
        billed = estimate.usd if (err.billed or err.unknown) else Decimal(0)
        why = None
        if err.billed and err.billed_usd is not None:
            billed = err.billed_usd  # the platform's own figure for the failed attempt
        if err.billed and sub.resume and (prior := self._billed_before(err.request_id, sub)):
            billed, why = Decimal(0), f"request {err.request_id} was already billed in ledger row {prior}"
        self._record(request, key, status, estimate, billed, request_id=err.request_id, error=str(err)[:500], note=why,
                     provider=provider)
        if not err.resumable:  # a request that may still finish stays journalled, to be resumed
            sub.retire()

    def _billed_before(self, request_id: str | None, sub: Submission) -> str | None:
        """The id of a ledger row that already billed this provider request (a crash came between
        writing it and retiring the journal entry), or None."""
        if not request_id:
            return None
        for r in self.ledger.find(request_id, since=sub.since):
            if r.provider_request_id == request_id and r.billed_usd > 0:
                return r.id
        return None

    def _reserve(self, request: GenerationRequest, key: str, estimate: Quote) -> str | None:
        if self.budget is None:
            return None
        who = request.attribution
        try:
            return self.budget.reserve(who.series, who.episode, estimate.usd,
                                       f"{who.asset} {who.item} ({request.endpoint}, ${estimate.usd})")
        except BudgetExceeded as e:
            self._record(request, key, "refused", estimate, Decimal(0), error=str(e))
            raise

    def _release(self, reservation: str | None) -> None:
        if self.budget is not None:
            self.budget.release(reservation)

    # -- plans -----------------------------------------------------------------------------------------
    def preflight(self, requests: Iterable[GenerationRequest], series: str, episode: str, what: str) -> Preflight:
        """Quote every request the store does not hold, and refuse the whole set (one ``refused``
        row, nothing spent) when it does not fit what is left of the budgets."""
        misses, hits = [], 0
        for r in requests:
            fitted, provider = self.route(r)
            key = fitted.key(provider.name)
            # a training request's result is a file (generate_file): held if its file is whole
            held = self.store.lookup_file(key) if fitted.training_data is not None else self.store.lookup(key)
            if held.state == "ok":
                hits += 1
            else:
                self.pricebook.usable(r.endpoint)
                misses.append((r, self._price(fitted).usd))
        plan = Preflight(sum((usd for _, usd in misses), Decimal(0)), misses, hits)
        if self.budget is not None and plan.usd > 0:
            try:
                self.budget.check_quote(series, episode, plan.usd, f"{what}: {len(misses)} image(s) to make",
                                        plan.dearest())
            except BudgetExceeded as e:
                first = misses[0][0]
                self.ledger.append(LedgerRow(
                    time=dt.datetime.now(dt.timezone.utc), run_id=self.run_id, series=series, episode=episode,
                    asset="preflight", item=what, reusable=False, provider=self.provider_for(first.endpoint).name,
                    endpoint=first.endpoint, request_key="", status="refused", billed_usd=Decimal(0),
                    list_usd=plan.usd, credits=plan.usd * self.pricebook.credits_per_usd, error=str(e)))
                raise
        return plan

    def generate_many(self, requests: Iterable[GenerationRequest]) -> Iterator[GenerationResult]:
        """Results in completion order, each platform's requests up to its provider's concurrency at
        once (``Providers.slot``)."""
        requests = list(requests)
        providers = {id(p): p for p in (self.provider_for(r.endpoint) for r in requests)}.values()
        workers = sum(p.concurrency for p in providers)
        if workers <= 1 or len(requests) <= 1:
            yield from map(self.generate, requests)
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(self.generate, r) for r in requests]
            try:
                for f in as_completed(futures):
                    yield f.result()
            finally:
                for f in futures:
                    f.cancel()


def _size_note(request: GenerationRequest, out: Any) -> str | None:
    """The result's size against the size asked for: priced from the result, noted when it differs
    (by more than rounding, for endpoints that take an aspect ratio and choose the pixels)."""
    try:
        want = requested_pixels(request.arguments, None)
    except (ImageSizeError, TypeError):
        return None
    got = (out.width, out.height)
    if "image_size" in request.arguments:
        return None if got == want else f"asked for {want[0]}x{want[1]}, got {got[0]}x{got[1]}"
    if abs(got[0] / got[1] - want[0] / want[1]) <= 0.02 * want[0] / want[1]:
        return None
    return f"asked for {request.arguments.get('aspect_ratio')}, got {got[0]}x{got[1]}"


def _join(*notes: str | None) -> str | None:
    return "; ".join(n for n in notes if n) or None


def _when(entry: dict[str, Any]) -> str:
    stamp = entry.get("started_at")
    return dt.datetime.fromtimestamp(stamp, dt.timezone.utc).isoformat(timespec="seconds") if stamp else "unknown time"

