"""The generation gateway: the one path every image takes.

    cache ─► budget ─► provider ─► store ─► ledger

Assets describe what to make (a GenerationRequest); the gateway decides whether to pay. A
request whose key is in the store is a hit and costs nothing. Otherwise it takes the key's
cross-process lock, checks again (another run may have just made it), reserves the quote against
the budgets, and only then calls the provider, so two runs needing the same image pay once.
Every attempt, whatever its outcome, is a ledger row written the moment it ends.
"""

from __future__ import annotations

import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from webtoon_assets.gateway.budget import Budget, BudgetExceeded
from webtoon_assets.gateway.providers.base import Provider, ProviderError
from webtoon_assets.gateway.retry import GenerationFailed, RetryPolicy
from webtoon_assets.gateway.request import GenerationRequest
from webtoon_assets.gateway.store import ImageStore
from webtoon_assets.ledger import Ledger, LedgerRow, Status
from webtoon_assets.pricing import PriceBook, Quote, quote


@dataclass(frozen=True)
class GenerationResult:
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

    @property
    def billed_usd(self) -> Decimal:
        return self.row.billed_usd

    @property
    def list_usd(self) -> Decimal:
        return self.row.list_usd


@dataclass(frozen=True)
class TextResult:
    request: GenerationRequest
    key: str
    text: str
    status: Status
    seconds: float
    row: LedgerRow


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
    def __init__(self, store: ImageStore, provider: Provider, ledger: Ledger, pricebook: PriceBook,
                 budget: Budget | None = None, run_id: str = "", log: Callable[[str], None] | None = None,
                 retry: RetryPolicy | None = None):
        self.retry = retry or RetryPolicy()
        self.store = store
        self.provider = provider
        self.ledger = ledger
        self.pricebook = pricebook
        self.budget = budget
        self.run_id = run_id
        self.log = log or (lambda _msg: None)

    def quote(self, request: GenerationRequest, response: dict[str, Any] | None = None) -> Quote:
        return quote(request.endpoint, pricing_request(request), response, book=self.pricebook)

    def _record(self, request: GenerationRequest, key: str, status: Status, q: Quote, billed: Decimal,
                width: int | None = None, height: int | None = None, request_id: str | None = None,
                error: str | None = None, billable_units: Decimal | None = None) -> LedgerRow:
        who = request.attribution
        row = LedgerRow(
            time=dt.datetime.now(dt.timezone.utc), run_id=self.run_id, series=who.series, episode=who.episode,
            asset=who.asset, item=who.item, reusable=who.reusable, provider=self.provider.name,
            endpoint=request.endpoint, request_key=key, status=status, billed_usd=billed, list_usd=q.usd,
            credits=billed * self.pricebook.credits_per_usd if billed else q.credits, units=q.units, unit=q.unit,
            megapixels=q.megapixels, images=q.images, seconds=q.seconds, width=width, height=height,
            inputs=[(r.width, r.height) for r in request.references if r.width and r.height],
            provider_request_id=request_id, billable_units=billable_units, error=error,
        )
        self.ledger.append(row)
        return row

    def _hit(self, request: GenerationRequest, key: str, record: dict, started: float) -> GenerationResult:
        row = self._record(request, key, "cached", self.quote(request), Decimal(0), record["width"], record["height"])
        return GenerationResult(request, key, self.store.image_path(key), record["sha256"], "cached",
                                record["width"], record["height"], self.provider.name,
                                time.monotonic() - started, row)

    def generate(self, request: GenerationRequest) -> GenerationResult:
        started = time.monotonic()
        key = request.key(self.provider.name)
        if (record := self.store.get(key)) is not None:
            return self._hit(request, key, record, started)
        with self.store.lock(key):
            if (record := self.store.get(key)) is not None:  # made by another run while we waited
                return self._hit(request, key, record, started)
            estimate = self.quote(request)  # unknown endpoint or unpriceable: fails before any spend
            with self.store.staging(key) as staged:
                out, attempt = self._attempts(request, key, estimate,
                                              lambda r: self.provider.generate(r, staged, key))
                final = self.quote(attempt, out.response)
                billed = final.usd if out.billed else Decimal(0)
                record = self.store.commit(key, staged, {
                    "provider": self.provider.name, "endpoint": request.endpoint,
                    "arguments": request.arguments, "sent_seed": attempt.arguments.get("seed"),
                    "references": [r.model_dump() for r in request.references],
                    "width": out.width, "height": out.height, "response": out.response,
                    "provider_request_id": out.request_id, "run_id": self.run_id,
                    "made_for": request.attribution.model_dump(), "created": time.time(),
                    "billed_usd": str(billed), "list_usd": str(final.usd),
                })
                row = self._record(request, key, "generated", final, billed, out.width, out.height,
                                   out.request_id, billable_units=out.billable_units)
                self._settle(request, estimate, row.cost_usd)
        return GenerationResult(request, key, self.store.image_path(key), record["sha256"], "generated",
                                out.width, out.height, self.provider.name, time.monotonic() - started, row)

    def generate_text(self, request: GenerationRequest) -> TextResult:
        """The same path for a text model's answer: cached by key, priced per token, in the ledger."""
        started = time.monotonic()
        key = request.key(self.provider.name)
        if (record := self.store.get_text(key)) is None:
            with self.store.lock(key):
                if (record := self.store.get_text(key)) is None:
                    estimate = self.quote(request)
                    out, _ = self._attempts(request, key, estimate, lambda r: self.provider.generate_text(r, key))
                    final = self.quote(request, out.response)
                    billed = final.usd if out.billed else Decimal(0)
                    row = self._record(request, key, "generated", final, billed, request_id=out.request_id)
                    self._settle(request, estimate, row.cost_usd)
                    self.store.commit_text(key, {"text": out.text, "provider": self.provider.name,
                                                 "endpoint": request.endpoint, "response": out.response,
                                                 "provider_request_id": out.request_id, "run_id": self.run_id,
                                                 "billed_usd": str(billed), "list_usd": str(final.usd)})
                    return TextResult(request, key, out.text, "generated", time.monotonic() - started, row)
        row = self._record(request, key, "cached", self.quote(request, record.get("response")), Decimal(0))
        return TextResult(request, key, record["text"], "cached", time.monotonic() - started, row)

    def _attempts(self, request: GenerationRequest, key: str, estimate: Quote, call: Callable[[GenerationRequest], Any]
                  ) -> tuple[Any, GenerationRequest]:
        """Call the provider until it succeeds or the policy gives up; a ledger row per failure."""
        who = request.attribution
        tries = nsfw = 0
        attempt = request
        while True:
            self._reserve(attempt, estimate)
            try:
                return call(attempt), attempt
            except Exception as e:
                err = e if isinstance(e, ProviderError) else ProviderError(
                    f"{type(e).__name__}: {e}", retryable=False, billed=False)
                billed = estimate.usd if err.billed else Decimal(0)
                self._record(request, key, "failed", estimate, billed, request_id=err.request_id,
                             error=str(err)[:500])
                self._settle(request, estimate, billed)
                tries += 1
                if err.nsfw and nsfw < self.retry.nsfw_retries:
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

    def _reserve(self, request: GenerationRequest, estimate: Quote) -> None:
        if self.budget is None:
            return
        who = request.attribution
        try:
            self.budget.reserve(who.series, who.episode, estimate.usd,
                                f"{who.asset} {who.item} ({request.endpoint}, ${estimate.usd})")
        except BudgetExceeded as e:
            self._record(request, request.key(self.provider.name), "refused", estimate, Decimal(0), error=str(e))
            raise

    def _settle(self, request: GenerationRequest, estimate: Quote, cost: Decimal) -> None:
        if self.budget is not None:
            self.budget.settle(request.attribution.series, request.attribution.episode, estimate.usd, cost)

    def generate_many(self, requests: Iterable[GenerationRequest]) -> Iterator[GenerationResult]:
        """Results in completion order, up to the provider's concurrency at once."""
        requests = list(requests)
        if self.provider.concurrency <= 1 or len(requests) <= 1:
            yield from map(self.generate, requests)
            return
        with ThreadPoolExecutor(max_workers=self.provider.concurrency) as pool:
            futures = [pool.submit(self.generate, r) for r in requests]
            try:
                for f in as_completed(futures):
                    yield f.result()
            finally:
                for f in futures:
                    f.cancel()
