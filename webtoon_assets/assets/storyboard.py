"""The storyboard: the validated panel plan derived from the episode script, stored as JSON."""


from dagster import AssetExecutionContext, AssetsDefinition, DynamicPartitionsDefinition, MaterializeResult, MetadataValue

from webtoon_assets.assets.common import load_inputs
from webtoon_assets.manifests import Storyboard
from webtoon_assets.assets.partitions import episode_asset
from webtoon_assets.storyboard import plan_storyboard
from webtoon_assets.bible import script_path
from webtoon_assets.gateway.resource import GatewayResource


def build(series_id: str, partitions: DynamicPartitionsDefinition) -> AssetsDefinition:
    @episode_asset(series_id, partitions, kinds={"json"},
                   description="Per panel: shot, characters, location, prompt, dialogue, reading order, gutter.")
    def storyboard(context: AssetExecutionContext, gateway: GatewayResource) -> MaterializeResult:
        series, episode = load_inputs(context, gateway)
        board = Storyboard(series=series.id, episode=episode.id, title=episode.title,
                           panels=plan_storyboard(series, episode))
        rows = ["| # | panel | shot | camera | aspect | width | characters | location | pace | gutter | lines |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        rows += [f"| {p.order} | {p.id} | {p.shot} | {p.camera} | {p.aspect} | {p.width} {p.align} | "
                 f"{', '.join(p.characters) or '-'} | {p.location} | {p.pace} | {p.gutter} | "
                 f"{len(p.dialogue) + len(p.captions) + len(p.sfx)} |" for p in board.panels]
        context.log.info(f"storyboard {episode.id}: {len(board.panels)} panels in {len(episode.scenes)} scenes")
        return MaterializeResult(value=board, metadata={
            "panels": len(board.panels),
            "scenes": len(episode.scenes),
            "characters": MetadataValue.text(", ".join(episode.characters())),
            "locations": MetadataValue.text(", ".join(episode.locations())),
            "script": MetadataValue.path(str(script_path(gateway.layout, series.id, episode.id))),
            "plan": MetadataValue.md("\n".join(rows)),
        })

    return storyboard
