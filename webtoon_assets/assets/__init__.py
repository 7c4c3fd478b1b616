"""The assets, in pipeline order. Per series, partitioned by episode:

    storyboard ─► style_sheet, character_sheets, prop_sheets, backgrounds ─► panels ─► lettered_panels
              ─► episode_strip ─► season_reader

and the model trial (partitioned by candidate) ─► model_recommendation. Across series: cost_tables,
after every generating asset. The storyboard quotes the whole episode before anything is paid.
"""

from __future__ import annotations

from dagster import AssetsDefinition, DynamicPartitionsDefinition

from webtoon_assets.assets.artifacts import artifact_assets
from webtoon_assets.assets.episode_strip import episode_strip_asset
from webtoon_assets.assets.lettering import lettered_panels_asset
from webtoon_assets.assets.loras import character_loras_asset
from webtoon_assets.assets.panels import panels_asset
from webtoon_assets.assets.storyboard import storyboard_asset

# What a series' episode run pays for: cost_tables follows all of them.
GENERATING = ("storyboard", "style_sheet", "character_sheets", "prop_sheets", "backgrounds", "character_loras",
              "panels")


def episode_assets(series_id: str, partitions: DynamicPartitionsDefinition) -> list[AssetsDefinition]:
    return [
        storyboard_asset(series_id, partitions),
        *artifact_assets(series_id, partitions),
        character_loras_asset(series_id, partitions),
        panels_asset(series_id, partitions),
        lettered_panels_asset(series_id, partitions),
        episode_strip_asset(series_id, partitions),
    ]
