"""The reusable artifacts: style sheet, character sheets (one per outfit worn), prop sheets, background plates.

Each is asked for per episode, but its request depends only on the bible, so an artifact made
for one episode is a cache hit in every later one: an episode generates only what it introduces.
"""

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, DynamicPartitionsDefinition, MaterializeResult

from webtoon_assets.assets.partitions import GENERATION_POOL, episode_asset
from webtoon_assets.manifests import ImageSet, Storyboard
from webtoon_assets.recipes import background_request, character_request, prop_request, style_request
from webtoon_assets.resources import GatewayResource


def artifact_assets(series_id: str, partitions: DynamicPartitionsDefinition) -> list[AssetsDefinition]:
    # After the storyboard, whose pre-flight quote covers the whole episode before anything is paid.
    @episode_asset(series_id, partitions, kinds={"image"}, pool=GENERATION_POOL,
                   deps=[AssetKey([series_id, "storyboard"])],
                   description="The series' visual style reference image.")
    def style_sheet(context: AssetExecutionContext, gateway: GatewayResource) -> MaterializeResult[ImageSet]:
        with gateway.session(context) as s:
            return s.materialize_images("style_sheet", [style_request(s.series(), s.episode)])

    @episode_asset(series_id, partitions, kinds={"image"}, pool=GENERATION_POOL,
                   description="A reference sheet per character appearing in the episode, one per outfit worn "
                               "(mira; mira@raincoat).")
    def character_sheets(context: AssetExecutionContext, gateway: GatewayResource,
                         storyboard: Storyboard) -> MaterializeResult[ImageSet]:
        with gateway.session(context) as s:
            return s.materialize_images("character_sheets", [character_request(s.series(), s.episode, c, outfit)
                                                             for c, outfit in storyboard.sheets()])

    @episode_asset(series_id, partitions, kinds={"image"}, pool=GENERATION_POOL,
                   description="A reference sheet per prop drawn in the episode (series.yaml props, [props=...]).")
    def prop_sheets(context: AssetExecutionContext, gateway: GatewayResource,
                    storyboard: Storyboard) -> MaterializeResult[ImageSet]:
        with gateway.session(context) as s:
            return s.materialize_images("prop_sheets", [prop_request(s.series(), s.episode, p)
                                                        for p in storyboard.props()])

    @episode_asset(series_id, partitions, kinds={"image"}, pool=GENERATION_POOL,
                   description="A background plate per location used in the episode.")
    def backgrounds(context: AssetExecutionContext, gateway: GatewayResource,
                    storyboard: Storyboard) -> MaterializeResult[ImageSet]:
        with gateway.session(context) as s:
            locations = dict.fromkeys(p.location for p in storyboard.panels)
            return s.materialize_images("backgrounds", [background_request(s.series(), s.episode, loc)
                                                        for loc in locations])

    return [style_sheet, character_sheets, prop_sheets, backgrounds]
