"""The panels family's references as its series packs them (``models.panels.pack_references``)."""

from __future__ import annotations

from pathlib import Path

from webtoon_assets.bible import Series
from webtoon_assets.compose.pack import pack_references, planned
from webtoon_assets.gateway import Reference


def packed_references(series: Series, refs: list[Reference], folder: Path | None) -> list[Reference]:
    """``refs`` packed into ``folder`` (the store's ``packed/``); with no folder, the packs as
    planned (their sizes, no pixels): what a pre-flight quote prices."""
    packing = series.models.panels.pack_references
    return planned(refs, packing) if folder is None else pack_references(refs, packing, folder)
