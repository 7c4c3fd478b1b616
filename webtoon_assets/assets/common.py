"""What every episode asset shares: loading the validated bible for the partition, and making a
set of images through the gateway with progress, readable copies and UI metadata."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Iterable

from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue
from PIL import Image

from webtoon_assets.assets.manifests import ImageItem, ImageSet
from webtoon_assets.bible import BibleError, Episode, Series, load_episode, load_series
from webtoon_assets.gateway import GenerationRequest
from webtoon_assets.gateway.resource import GatewayResource


def series_of(context: AssetExecutionContext) -> str:
    return context.assets_def.key.path[0]


def load_inputs(context: AssetExecutionContext, gateway: GatewayResource) -> tuple[Series, Episode]:
    """The series and this partition's episode, validated before any spend. A bad bible fails the
    step with the file, field and expectation as its message, and is never retried."""
    try:
        series = load_series(gateway.layout, series_of(context))
        return series, load_episode(gateway.layout, series, context.partition_key)
    except BibleError as e:
        raise Failure(description=str(e), allow_retries=False) from e


def contact_sheet_md(paths: Iterable[Path], thumb_width: int = 160, columns: int = 6,
                     max_height: int | None = None) -> str:
    """A small JPEG contact sheet as markdown: Dagster has no image metadata type, but shows this."""
    thumbs: list[Image.Image] = []
    for p in paths:
        with Image.open(p) as im:
            im.thumbnail((thumb_width, max_height or thumb_width * 2))
            thumbs.append(im.convert("RGB"))
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


def make_images(context: AssetExecutionContext, gateway: GatewayResource, asset: str,
                requests: list[GenerationRequest]) -> MaterializeResult:
    """Generate (or reuse) every request, publish readable copies, and describe them for the UI."""
    series, episode = series_of(context), context.partition_key
    out_dir = gateway.layout.output_dir(series, episode) / asset
    items: dict[str, ImageItem] = {}
    total = len(requests)
    for n, result in enumerate(gateway.gateway.generate_many(requests), start=1):
        item = result.request.attribution.item
        readable = gateway.gateway.store.publish(result.key, out_dir / f"{item}.png")
        items[item] = ImageItem(
            item=item, path=str(readable), store_path=str(result.path), key=result.key, sha256=result.sha256,
            status=result.status, endpoint=result.request.endpoint, provider=result.provider,
            width=result.width, height=result.height, references=[r.role for r in result.request.references],
        )
        context.log.info(f"{asset} {n}/{total} {item}: {result.status} ({result.seconds:.2f}s)")
    ordered = [items[r.attribution.item] for r in requests]
    manifest = ImageSet(series=series, episode=episode, asset=asset, items=ordered)
    generated = sum(i.status == "generated" for i in ordered)
    table = "\n".join(
        ["| item | status | endpoint | references | file |", "|---|---|---|---|---|"]
        + [f"| {i.item} | {i.status} | `{i.endpoint}` | {', '.join(i.references) or '-'} | `{i.path}` |"
           for i in ordered]
    )
    return MaterializeResult(
        value=manifest,
        metadata={
            "images": len(ordered),
            "generated": generated,
            "reused": len(ordered) - generated,
            "folder": MetadataValue.path(str(out_dir)),
            "items": MetadataValue.md(table),
            "preview": MetadataValue.md(contact_sheet_md(Path(i.path) for i in ordered)),
        },
    )
