"""The asset families of a series, all partitioned by episode:

    storyboard ─► character_sheets, backgrounds ─┐
    style_sheet ─────────────────────────────────┴─► panels ─► lettered_panels ─► episode_strip
"""

from __future__ import annotations

from dagster import AssetsDefinition, DynamicPartitionsDefinition

from webtoon_assets.assets import lettering, panels, sheets, storyboard, strip


def build_series_assets(series_id: str, partitions: DynamicPartitionsDefinition) -> list[AssetsDefinition]:
    return [
        storyboard.build(series_id, partitions),
        *sheets.build(series_id, partitions),
        panels.build(series_id, partitions),
        lettering.build(series_id, partitions),
        strip.build(series_id, partitions),
    ]
