"""The reusable artifacts: style sheet, character sheets, background plates.

Each is asked for per episode, but its request depends only on the bible, so an artifact made
for one episode is a cache hit in every later one: an episode generates only what it introduces.
"""


from typing import Any

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, DynamicPartitionsDefinition, MaterializeResult

from webtoon_assets.assets.common import load_inputs, make_images
from webtoon_assets.manifests import Storyboard
from webtoon_assets.assets.partitions import GENERATION_POOL, episode_asset
from webtoon_assets.recipes.requests import background_request, character_request, style_request
from webtoon_assets.gateway.resource import GatewayResource


def build(series_id: str, partitions: DynamicPartitionsDefinition) -> list[AssetsDefinition]:
    # After the storyboard, whose pre-flight quote covers the whole episode before anything is paid.
    @episode_asset(series_id, partitions, kinds={"image"}, pool=GENERATION_POOL,
                   deps=[AssetKey([series_id, "storyboard"])],
                   description="The series' visual style reference image.")
    def style_sheet(context: AssetExecutionContext, gateway: GatewayResource) -> MaterializeResult:
        series, _ = load_inputs(context, gateway)
        return make_images(context, gateway, series, "style_sheet", [style_request(series, context.partition_key)])

    @episode_asset(series_id, partitions, kinds={"image"}, pool=GENERATION_POOL,
                   description="A reference sheet per character appearing in the episode.")
    def character_sheets(context: AssetExecutionContext, gateway: GatewayResource,
                         storyboard: dict[str, Any]) -> MaterializeResult:
        series, _ = load_inputs(context, gateway)
        cast = Storyboard.model_validate(storyboard).characters()
        return make_images(context, gateway, series, "character_sheets",
                           [character_request(series, context.partition_key, c) for c in cast])

    @episode_asset(series_id, partitions, kinds={"image"}, pool=GENERATION_POOL,
                   description="A background plate per location used in the episode.")
    def backgrounds(context: AssetExecutionContext, gateway: GatewayResource,
                    storyboard: dict[str, Any]) -> MaterializeResult:
        series, _ = load_inputs(context, gateway)
        locations = dict.fromkeys(p.location for p in Storyboard.model_validate(storyboard).panels)
        return make_images(context, gateway, series, "backgrounds",
                           [background_request(series, context.partition_key, loc) for loc in locations])

    return [style_sheet, character_sheets, backgrounds]
