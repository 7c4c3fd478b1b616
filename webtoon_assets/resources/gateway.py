"""The gateway as the API assets call, in the manner of dagster-openai: ``with gateway.session(context)
as s`` makes images and text, turns the gateway's refusals into Failures that name the cause, and
``s.materialize(...)`` attaches what the step cost. Nothing else in an asset touches the store, the
budgets or the price book.

Cost metadata (the same names as the DuckDB tables; README, "What the cost numbers mean"):
``spent_usd`` billed by this materialization; ``quote_usd`` the list price of what it made;
``saved_usd`` the list price of what the cache supplied; ``episode_spent_usd`` and
``episode_quote_usd`` the episode to date, over every run, so a re-run does not drop them to 0."""


import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from dagster import (AssetCheckResult, AssetExecutionContext, ConfigurableResource, Failure, InitResourceContext,
                     MaterializeResult, MetadataValue)
from dagster._core.definitions.utils import NoValueSentinel
from pydantic import Field, PrivateAttr

from webtoon_assets.bible import BibleError, Episode, ProseScript, Series, load_episode, load_series
from webtoon_assets.gateway import GenerationRequest, GenerationResult
from webtoon_assets.gateway.budget import BudgetExceeded
from webtoon_assets.gateway.coordination import open_coordination
from webtoon_assets.gateway.gateway import Gateway, Preflight, TextResult
from webtoon_assets.gateway.retry import AttemptPolicy, GenerationFailed
from webtoon_assets.gateway.remote_store import RemoteStoreError, StoreConfigError, open_store
from webtoon_assets.manifests import ImageItem, ImageSet
from webtoon_assets.paths import DataLayout
from webtoon_assets.pricing import PriceBook, QuoteError, RetiredEndpoint, UnknownEndpoint, load_pricebook
from webtoon_assets.gateway.providers import NoProvider
from webtoon_assets.resources.data import DataRootResource
from webtoon_assets.resources.previews import contact_sheet_md, thumbnail
from webtoon_assets.resources.providers import ProviderConfigError, ProviderResource
from webtoon_assets.temps import sweep_temp_files

# What the gateway refuses with (a budget, a price, a failed generation, a bad input, a provider that
# cannot start): a step failure that names the cause, never retried by Dagster (a retry pays again).
REFUSALS = (BudgetExceeded, UnknownEndpoint, RetiredEndpoint, QuoteError, GenerationFailed, BibleError,
            ProviderConfigError, NoProvider, StoreConfigError, RemoteStoreError)
FINISHING_THREADS = 2  # publish, thumbnail and score results beside the requests in flight


class Progress:
    """A step's progress in its log: every log line is a row in Dagster's event log (~10 ms), so a
    line per image would cost more than the image's own bookkeeping. One line every few seconds and
    at the end; each item's status is in the materialization's table."""

    EVERY_SECONDS = 5.0

    def __init__(self, log: Callable[[str], None], asset: str, total: int):
        self.log, self.asset, self.total = log, asset, total
        self.n = self.paid = self.hits = 0
        self.billed = self.listed = Decimal(0)
        self.last = time.monotonic()

    def done(self, result: GenerationResult) -> None:
        self.n += 1
        if result.status == "generated":
            self.paid += 1
            self.billed += result.billed_usd
            self.listed += result.list_usd
        else:
            self.hits += 1
        if time.monotonic() - self.last >= self.EVERY_SECONDS and self.n < self.total:
            self.last = time.monotonic()
            self.log(self.line())

    def line(self) -> str:
        return (f"{self.asset} {self.n}/{self.total}: {self.paid} made (${self.billed} billed, list ${self.listed}), "
                f"{self.hits} from the store")

    def finish(self) -> None:
        self.log(self.line())


class GatewayResource(ConfigurableResource):
    """Config: the data root, the provider (a resource of its own), a cap on one run's spend and how
    often a failed request is tried again. Unset values come from the environment when the run starts."""

    data: DataRootResource
    provider: ProviderResource
    max_run_usd: str | None = Field(None, description="cap on one run's spend in USD "
                                                      "(WEBTOON_MAX_RUN_USD; unset = no cap)")
    attempts: int | None = Field(None, description="tries per request for a retryable failure "
                                                   "(WEBTOON_RETRY_ATTEMPTS, default 3)")
    nsfw_retries: int | None = Field(None, description="new-seed retries after an NSFW-flagged output "
                                                       "(WEBTOON_NSFW_RETRIES, default 2)")
    database_url: str | None = Field(None, description="postgresql:// URL of the database where the money path's "
                                                       "processes meet, on every machine: ledger, request locks, "
                                                       "budgets, submission journal (WEBTOON_DATABASE_URL; unset = "
                                                       "files under the data root, one machine)")
    _gateway: Gateway | None = PrivateAttr(default=None)
    _coordination: Any = PrivateAttr(default=None)
    _run_id: str = PrivateAttr(default="")

    @property
    def layout(self) -> DataLayout:
        return self.data.layout

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._run_id = context.run.run_id if context.run else ""

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._gateway is not None:
            self._gateway.providers.close()
            self._gateway.ledger.close()
            if self._gateway.budget is not None:
                self._gateway.budget.close()
            self._gateway = None
        if self._coordination is not None:
            self._coordination.close()
            self._coordination = None

    def _open(self) -> Gateway:
        """The gateway library, started on first use, so a step that never generates starts no provider."""
        if self._gateway is None:
            layout = self.layout
            sweep_temp_files(layout.root)  # temp files left by writers that were killed
            if layout.root not in layout.store.parents:  # a shared store (WEBTOON_STORE_DIR)
                sweep_temp_files(layout.store)
            cap = self.max_run_usd or os.environ.get("WEBTOON_MAX_RUN_USD", "")
            policy = AttemptPolicy.from_env()
            policy = AttemptPolicy(attempts=self.attempts or policy.attempts, base_seconds=policy.base_seconds,
                                   max_seconds=policy.max_seconds,
                                   nsfw_retries=policy.nsfw_retries if self.nsfw_retries is None else self.nsfw_retries)
            # files under the data root, or one database every machine reaches (WEBTOON_DATABASE_URL)
            coordination = self._coordination = open_coordination(layout, self.database_url)
            self._gateway = Gateway(
                store=open_store(layout, self.database_url),  # WEBTOON_STORE_URL: a shared store behind it
                provider=self.provider.open(layout.store),
                ledger=coordination.ledger,
                pricebook=load_pricebook(layout.pricebook),
                budget=coordination.budgets(self._run_id, per_run_usd=Decimal(cap) if cap else None),
                run_id=self._run_id,
                retry=policy,
                locks=coordination.lock,
                submissions=coordination.submissions,
            )
        return self._gateway

    @contextmanager
    def session(self, context: AssetExecutionContext, episode: str | None = None) -> Iterator["GenerationSession"]:
        """One step's use of the gateway. ``episode``: the partition, unless the asset has none."""
        try:
            session = GenerationSession(self, context, self._open(),
                                        episode if episode is not None else context.partition_key)
            yield session
        except REFUSALS as e:
            raise Failure(description=str(e), allow_retries=False) from e


class GenerationSession:
    def __init__(self, resource: GatewayResource, context: AssetExecutionContext, gateway: Gateway, episode: str):
        self.resource, self.context, self.gateway, self.episode = resource, context, gateway, episode
        self.layout = resource.layout
        self.series_id = context.assets_def.key.path[0]
        self.results: list[GenerationResult | TextResult] = []
        self._series: Series | None = None

    @property
    def provider(self) -> str:
        """The run's providers: 'local' offline, else the platforms with a key ('bfl+fal')."""
        return self.gateway.providers.names

    @property
    def pricebook(self) -> PriceBook:
        return self.gateway.pricebook

    # -- inputs, validated before any spend -------------------------------------------------------------
    def series(self) -> Series:
        """The series' bible, checked against the price book: every endpoint it names must be priced
        and take the arguments given. A bad bible fails the step naming file, line and field."""
        if self._series is None:
            self._series = load_series(self.layout, self.series_id, book=self.gateway.pricebook)
        return self._series

    def script(self) -> Episode | ProseScript:
        return load_episode(self.layout, self.series(), self.episode)

    # -- money ---------------------------------------------------------------------------------------------
    def preflight(self, requests: list[GenerationRequest], what: str, only_if_limited: bool = False,
                  budget_usd: Decimal | None = None) -> Preflight | None:
        """Quote everything not yet in the store; refuse it whole (nothing spent) if the budget cannot
        cover it, rather than stop half-made when the money runs out. ``budget_usd``: the cap of this
        step's scope (the trial's), instead of the series' per-episode budget; every request is then
        reserved against it too."""
        series, budget = self.series(), self.gateway.budget
        if budget is not None:
            budget.set_episode_budget(series.id, self.episode,
                                      budget_usd if budget_usd is not None else series.budget.per_episode_usd)
        if only_if_limited and (budget is None or not budget.limited(series.id, self.episode)):
            return None
        try:
            plan = self.gateway.preflight(requests, series.id, self.episode, what)
        except REFUSALS as e:
            raise Failure(description=f"pre-flight quote: {e}", allow_retries=False) from e
        if plan.misses:
            self.context.log.info(f"pre-flight quote for {what}: {len(plan.misses)} to make, ${plan.usd} at list "
                                  f"price ({plan.hits} already in the store)")
        return plan

    def generate(self, request: GenerationRequest) -> GenerationResult:
        result = self.gateway.generate(request)
        self.results.append(result)
        return result

    def generate_many(self, requests: list[GenerationRequest]) -> Iterator[GenerationResult]:
        for result in self.gateway.generate_many(requests):
            self.results.append(result)
            yield result

    def generate_text(self, request: GenerationRequest) -> TextResult:
        result = self.gateway.generate_text(request)
        self.results.append(result)
        return result

    def make_images(self, asset: str, requests: list[GenerationRequest],
                    on_result: Callable[[str, Path, str], None] | None = None) -> tuple[ImageSet, dict[str, Any]]:
        """Make (or reuse) every request, publish readable copies under output/, and describe them for
        the UI: the manifest, and metadata with a table of items and a contact sheet."""
        self.preflight(requests, f"{asset} of {self.episode}", only_if_limited=True)
        out_dir = self.layout.output_dir(self.series_id, self.episode) / asset
        made: dict[str, GenerationResult] = {}
        items: dict[str, ImageItem] = {}
        thumbs: dict[str, Any] = {}

        def finish(result: GenerationResult) -> tuple[GenerationResult, Path, Any]:
            # A result's own work (a readable copy, its thumbnail, its consistency score) runs beside
            # the requests still in flight, on other threads: the results' stream never waits on it.
            item = result.request.attribution.item
            readable = self.gateway.store.publish(result.key, out_dir / f"{item}.png")
            thumb = thumbnail(readable)
            if on_result is not None:
                on_result(item, readable, result.provider)
            return result, readable, thumb

        progress = Progress(self.context.log.info, f"{asset} {self.episode}" if self.episode else asset, len(requests))
        with ThreadPoolExecutor(max_workers=FINISHING_THREADS, thread_name_prefix="finish") as finishing:
            pending = [finishing.submit(finish, r) for r in self.generate_many(requests)]
            for future in as_completed(pending):
                result, readable, thumb = future.result()
                item = result.request.attribution.item
                made[item], thumbs[item] = result, thumb
                items[item] = ImageItem(
                    item=item, path=str(readable), store_path=str(result.path), key=result.key, sha256=result.sha256,
                    status=result.status, endpoint=result.request.endpoint, provider=result.provider,
                    width=result.width, height=result.height, references=[r.role for r in result.request.references])
                progress.done(result)
                if result.row.note:  # a mended store entry (quarantined file, rebuilt record) or a resumed request
                    self.context.log.warning(f"{asset} {item}: {result.row.note}")
        progress.finish()
        ordered = [items[r.attribution.item] for r in requests]
        table = "\n".join(
            ["| item | status | endpoint | spent | quote | credits | MP | references |", "|---|---|---|---|---|---|---|---|"]
            + [f"| {i.item} | {'paid' if i.status == 'generated' else 'hit'} | `{i.endpoint}` | "
               f"${made[i.item].billed_usd} | ${made[i.item].list_usd} | {made[i.item].row.credits} | "
               f"{made[i.item].row.megapixels or '-'} | {', '.join(i.references) or '-'} |" for i in ordered])
        manifest = ImageSet(series=self.series_id, episode=self.episode, asset=asset, items=ordered)
        return manifest, {"images": len(ordered), "folder": MetadataValue.path(str(out_dir)),
                          "items": MetadataValue.md(table),
                          "preview": MetadataValue.md(contact_sheet_md(thumbs[i.item] for i in ordered))}

    def cost_metadata(self) -> dict[str, Any]:
        """This step's costs, and the episode's to date (from the budgets' running sums of the ledger)."""
        rows = [r.row for r in self.results]
        made = [r for r in rows if r.status == "generated"]
        meta: dict[str, Any] = {
            "spent_usd": float(sum((r.billed_usd for r in rows), Decimal(0))),
            "quote_usd": float(sum((r.list_usd for r in made), Decimal(0))),
            "saved_usd": float(sum((r.list_usd for r in rows if r.status == "cached"), Decimal(0))),
            "generations": len(made),
            "cache_hits": sum(r.status == "cached" for r in rows),
            "credits": float(sum((r.credits for r in made), Decimal(0))),
            "megapixels": float(sum((r.megapixels or 0 for r in made), Decimal(0))),
            "provider": self.provider,
            # the settings this run's provider used (the launchpad's, else the environment's, else defaults)
            **{f"provider_{k}": v for k, v in self.resource.provider.settings().items()},
        }
        if self.episode and self.gateway.budget is not None:
            spent, quote = self.gateway.budget.episode_totals(self.series_id, self.episode)
            meta |= {"episode_spent_usd": float(spent), "episode_quote_usd": float(quote)}
        return meta

    def materialize(self, value: Any = NoValueSentinel, metadata: dict[str, Any] | None = None,
                    check_results: Iterable[AssetCheckResult] = ()) -> MaterializeResult:
        """The step's result with its cost metadata attached (``value`` goes to the IO manager)."""
        return MaterializeResult(value=value, metadata={**(metadata or {}), **self.cost_metadata()},
                                 check_results=list(check_results) or None)

    def materialize_images(self, asset: str, requests: list[GenerationRequest],
                           on_result: Callable[[str, Path, str], None] | None = None,
                           check_results: Callable[[], Iterable[AssetCheckResult]] = tuple) -> MaterializeResult:
        """``make_images`` then ``materialize``: an image family's whole step (checks asked for after)."""
        manifest, meta = self.make_images(asset, requests, on_result)
        return self.materialize(manifest, meta, check_results())
