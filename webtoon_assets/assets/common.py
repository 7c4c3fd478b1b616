"""What every episode asset shares: loading the validated bible for the partition, and making a
set of images through the gateway with progress, costs, readable copies and UI metadata."""

from __future__ import annotations

import base64
import io
from decimal import Decimal
from pathlib import Path
from typing import Callable, Iterable

from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue
from PIL import Image

from webtoon_assets.manifests import ImageItem, ImageSet
from webtoon_assets.bible import BibleError, Episode, ProseScript, Series, load_episode, load_series
from webtoon_assets.costs import refresh_cost_tables
from webtoon_assets.gateway import GenerationRequest, GenerationResult
from webtoon_assets.gateway.gateway import Preflight
from webtoon_assets.gateway.budget import BudgetExceeded
from webtoon_assets.gateway.retry import GenerationFailed
from webtoon_assets.gateway.resource import GatewayResource
from webtoon_assets.pricing import QuoteError, UnknownEndpoint


def series_of(context: AssetExecutionContext) -> str:
    return context.assets_def.key.path[0]


def load_inputs(context: AssetExecutionContext, gateway: GatewayResource) -> tuple[Series, Episode | ProseScript]:
    """The series and this partition's script, validated before any spend: the bible, the script,
    and that every model endpoint it names is in the price book with arguments it accepts. A bad
    input fails the step with the file, line, field and expectation as its message, never retried."""
    try:
        series = load_series(gateway.layout, series_of(context), book=gateway.gateway.pricebook)
        script = load_episode(gateway.layout, series, context.partition_key)
        return series, script
    except BibleError as e:
        raise Failure(description=str(e), allow_retries=False) from e


def thumbnail(path: Path, width: int = 160, max_height: int | None = None) -> Image.Image:
    with Image.open(path) as im:
        im.thumbnail((width, max_height or width * 2))
        return im.convert("RGB")


def contact_sheet_md(thumbs: Iterable[Image.Image], columns: int = 6) -> str:
    """A small JPEG contact sheet as markdown: Dagster has no image metadata type, but shows this."""
    thumbs = list(thumbs)
    if not thumbs:
        return "_no images_"
    rows = [thumbs[i:i + columns] for i in range(0, len(thumbs), columns)]
    width = max(sum(t.width for t in r) + 4 * (len(r) - 1) for r in rows)
    height = sum(max(t.height for t in r) for r in rows) + 4 * (len(rows) - 1)
    sheet = Image.new("RGB", (width, height), "white")
    y = 0
    for r in rows:
        x = 0
        for t in r:
            sheet.paste(t, (x, y))
            x += t.width + 4
        y += max(t.height for t in r) + 4
    buf = io.BytesIO()
    sheet.save(buf, format="JPEG", quality=70)
    return f"![preview](data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()})"


def cost_metadata(results: list[GenerationResult]) -> dict[str, float | int]:
    """The numbers the UI plots per materialization (billed is real money; list is at list price)."""
    made = [r for r in results if r.status == "generated"]
    return {
        "cost_usd": float(sum((r.billed_usd for r in results), Decimal(0))),
        "list_usd": float(sum((r.list_usd for r in made), Decimal(0))),
        "saved_usd": float(sum((r.list_usd for r in results if r.status == "cached"), Decimal(0))),
        "credits": float(sum((r.row.credits for r in made), Decimal(0))),
        "generations": len(made),
        "cache_hits": len(results) - len(made),
        "megapixels": float(sum((r.row.megapixels or 0 for r in made), Decimal(0))),
    }


def preflight(context: AssetExecutionContext, gateway: GatewayResource, series: Series,
              requests: list[GenerationRequest], what: str, only_if_limited: bool = False) -> Preflight | None:
    """Quote everything not yet in the store; refuse it whole (nothing spent) if the budget cannot
    cover it, rather than stop half-made when the money runs out."""
    gw = gateway.gateway
    if gw.budget is not None:
        gw.budget.set_episode_budget(series.id, context.partition_key, series.budget.per_episode_usd)
    if only_if_limited and (gw.budget is None or not gw.budget.limited(series.id, context.partition_key)):
        return None
    try:
        plan = gw.preflight(requests, series.id, context.partition_key, what)
    except (BudgetExceeded, UnknownEndpoint, QuoteError) as e:
        raise Failure(description=f"pre-flight quote: {e}", allow_retries=False) from e
    if plan.misses:
        context.log.info(f"pre-flight quote for {what}: {len(plan.misses)} to make, ${plan.usd} at list price "
                         f"({plan.hits} already in the store)")
    return plan


def make_images(context: AssetExecutionContext, gateway: GatewayResource, series: Series, asset: str,
                requests: list[GenerationRequest],
                on_result: Callable[[str, Path, str], None] | None = None) -> MaterializeResult:
    """Generate (or reuse) every request, publish readable copies, and describe them for the UI.
    The cost tables are refreshed when the step ends, whether it succeeded or not."""
    episode = context.partition_key
    gw = gateway.gateway
    preflight(context, gateway, series, requests, f"{asset} of {episode}", only_if_limited=True)
    out_dir = gateway.layout.output_dir(series.id, episode) / asset
    results: dict[str, GenerationResult] = {}
    items: dict[str, ImageItem] = {}
    thumbs: dict[str, Image.Image] = {}
    try:
        for n, result in enumerate(gw.generate_many(requests), start=1):
            item = result.request.attribution.item
            readable = gw.store.publish(result.key, out_dir / f"{item}.png")
            results[item] = result
            thumbs[item] = thumbnail(readable)  # made while later requests are still in flight
            if on_result is not None:
                on_result(item, readable, result.provider)
            items[item] = ImageItem(
                item=item, path=str(readable), store_path=str(result.path), key=result.key, sha256=result.sha256,
                status=result.status, endpoint=result.request.endpoint, provider=result.provider,
                width=result.width, height=result.height, references=[r.role for r in result.request.references],
            )
            paid = f"${result.billed_usd} billed" if result.status == "generated" else "free"
            context.log.info(f"{asset} {n}/{len(requests)} {item}: {result.status} ({paid}, list "
                             f"${result.list_usd}, {result.seconds:.2f}s)")
            if result.row.note:  # a mended store entry (quarantined file, rebuilt record) or a resumed request
                context.log.warning(f"{asset} {item}: {result.row.note}")
    except (BudgetExceeded, UnknownEndpoint, QuoteError, GenerationFailed) as e:
        raise Failure(description=str(e), allow_retries=False) from e
    finally:
        refresh_cost_tables(gateway.layout, log=context.log.warning)
    ordered = [items[r.attribution.item] for r in requests]
    manifest = ImageSet(series=series.id, episode=episode, asset=asset, items=ordered)
    table = "\n".join(
        ["| item | status | endpoint | billed | list | credits | MP | references |", "|---|---|---|---|---|---|---|---|"]
        + [f"| {i.item} | {'paid' if i.status == 'generated' else 'hit'} | `{i.endpoint}` | "
           f"${results[i.item].billed_usd} | ${results[i.item].list_usd} | {results[i.item].row.credits} | "
           f"{results[i.item].row.megapixels or '-'} | {', '.join(i.references) or '-'} |" for i in ordered]
    )
    return MaterializeResult(
        value=manifest,
        metadata={
            **cost_metadata(list(results.values())),
            "images": len(ordered),
            "folder": MetadataValue.path(str(out_dir)),
            "items": MetadataValue.md(table),
            "preview": MetadataValue.md(contact_sheet_md(thumbs[i.item] for i in ordered)),
        },
    )
