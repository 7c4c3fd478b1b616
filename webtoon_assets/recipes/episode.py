"""The whole episode as requests, before anything is made: what the pre-flight quote prices.

A panel's key depends on its reference images' content, so a panel whose sheets are not made yet
cannot be in the store: its references are planned stand-ins of the right size (a quote depends
on sizes, not on pixels), and it is counted as a miss."""

from __future__ import annotations

from webtoon_assets.recipes.requests import (background_request, character_request, panel_references, panel_request,
                                            prop_request, style_request)
from webtoon_assets.bible import Series
from webtoon_assets.recipes.packing import packed_references
from webtoon_assets.gateway import Gateway, GenerationRequest
from webtoon_assets.manifests import ImageItem, Storyboard
from webtoon_assets.sizes import requested_pixels


def _planned(gw: Gateway, request: GenerationRequest) -> ImageItem:
    fitted, provider = gw.route(request)
    key = fitted.key(provider.name)
    record = gw.store.get(key)
    width, height = (record["width"], record["height"]) if record else requested_pixels(fitted.arguments)
    return ImageItem(item=request.attribution.item, path="", store_path=str(gw.store.image_path(key)), key=key,
                     sha256=record["sha256"] if record else f"planned:{key}", status="planned",
                     endpoint=request.endpoint, provider=provider.name, width=width, height=height)


def episode_requests(gw: Gateway, series: Series, episode: str, board: Storyboard) -> list[GenerationRequest]:
    style = style_request(series, episode)
    chars = [character_request(series, episode, c, outfit) for c, outfit in board.sheets()]
    props = [prop_request(series, episode, p) for p in board.props()]
    plates = {loc: background_request(series, episode, loc) for loc in dict.fromkeys(p.location for p in board.panels)}
    style_item = _planned(gw, style)
    char_items = {r.attribution.item: _planned(gw, r) for r in chars}
    prop_items = {r.attribution.item: _planned(gw, r) for r in props}
    plate_items = {loc: _planned(gw, r) for loc, r in plates.items()}
    panels = [panel_request(series, episode, plan, packed_references(
        series, panel_references(series, plan, style_item, char_items, plate_items, prop_items), None))
        for plan in board.panels]
    return [style, *chars, *props, *plates.values(), *panels]
