"""The episode strip: panels stacked 800 px wide with the storyboard's gutters.

Lettering (a later stage) slots in between: the strip stacks whatever panel images it is given."""


from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, AssetsDefinition, DynamicPartitionsDefinition, MaterializeResult, MetadataValue

from webtoon_assets.assets.common import contact_sheet_md, series_of, thumbnail
from webtoon_assets.assets.manifests import ImageSet, Storyboard, Strip
from webtoon_assets.assets.partitions import episode_asset
from webtoon_assets.compose.strip import compose_strip
from webtoon_assets.gateway.resource import GatewayResource


def build(series_id: str, partitions: DynamicPartitionsDefinition) -> AssetsDefinition:
    @episode_asset(series_id, partitions, kinds={"image"},
                   description="The episode as one vertical strip, 800 px wide, gutters from the storyboard.")
    def episode_strip(context: AssetExecutionContext, gateway: GatewayResource, storyboard: dict[str, Any],
                      panels: dict[str, Any]) -> MaterializeResult:
        board = Storyboard.model_validate(storyboard)
        images = ImageSet.model_validate(panels).by_item()
        missing = [p.id for p in board.panels if p.id not in images]
        if missing:
            raise ValueError(f"panels {missing} of the storyboard have no image: materialize panels again")
        dest = gateway.layout.output_dir(series_of(context), context.partition_key) / "strip.png"
        width, height = compose_strip([(Path(images[p.id].path), p.gutter) for p in board.panels], dest)
        context.log.info(f"episode_strip {context.partition_key}: {width}x{height} px -> {dest}")
        strip = Strip(series=board.series, episode=board.episode, path=str(dest), width=width, height=height,
                      panels=len(board.panels))
        return MaterializeResult(value=strip, metadata={
            "path": MetadataValue.path(str(dest)),
            "width": width,
            "height": height,
            "panels": len(board.panels),
            "preview": MetadataValue.md(contact_sheet_md([thumbnail(dest, 120, max_height=4000)])),
        })

    return episode_strip
