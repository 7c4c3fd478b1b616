"""The asset families of a series, all partitioned by episode:

    storyboard ─► style_sheet, character_sheets, backgrounds ─► panels ─► lettered_panels ─► episode_strip

The storyboard quotes the whole episode before anything is paid (the pre-flight quote).
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
