"""Panels: one image per storyboard panel, conditioned on its character sheets, background and style."""

from dagster import AssetExecutionContext, AssetsDefinition, DynamicPartitionsDefinition

from webtoon_assets.assets.checks import ConsistencyScores, consistency_spec
from webtoon_assets.assets.partitions import GENERATION_POOL, episode_asset
from webtoon_assets.manifests import ImageSet, Storyboard
from webtoon_assets.recipes import panel_references, panel_request
from webtoon_assets.resources import GatewayResource


def panels_asset(series_id: str, partitions: DynamicPartitionsDefinition) -> AssetsDefinition:
    # The output's type is given here: beside check specs, a return annotation would be read as the checks'.
    @episode_asset(series_id, partitions, kinds={"image"}, pool=GENERATION_POOL, dagster_type=ImageSet,
                   check_specs=[consistency_spec(series_id, partitions)],
                   description="One image per panel; its character sheets, background and style are sent as references.")
    def panels(context: AssetExecutionContext, gateway: GatewayResource, storyboard: Storyboard,
               style_sheet: ImageSet, character_sheets: ImageSet, backgrounds: ImageSet):
        with gateway.session(context) as s:
            series = s.series()
            style, chars, plates = style_sheet.items[0], character_sheets.by_item(), backgrounds.by_item()
            requests = [panel_request(series, s.episode, plan, panel_references(series, plan, style, chars, plates))
                        for plan in storyboard.panels]
            consistency = ConsistencyScores(series, storyboard, character_sheets)  # scored as each panel lands
            return s.materialize_images("panels", requests, on_result=consistency.add,
                                        check_results=lambda: [consistency.result()])

    return panels
