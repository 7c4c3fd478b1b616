"""Panels: one image per storyboard panel, conditioned on its character sheets, background and style."""


from typing import Any

from dagster import AssetExecutionContext, AssetsDefinition, DynamicPartitionsDefinition, MaterializeResult

from webtoon_assets.assets.checks import ConsistencyScores, check_specs, cost_check
from webtoon_assets.assets.common import load_inputs, make_images
from webtoon_assets.manifests import ImageSet, Storyboard
from webtoon_assets.assets.partitions import GENERATION_POOL, episode_asset
from webtoon_assets.recipes.requests import panel_references, panel_request
from webtoon_assets.gateway.resource import GatewayResource


def build(series_id: str, partitions: DynamicPartitionsDefinition) -> AssetsDefinition:
    @episode_asset(series_id, partitions, kinds={"image"}, pool=GENERATION_POOL, check_specs=check_specs(series_id, partitions),
                   description="One image per panel; its character sheets, background and style are sent as references.")
    def panels(context: AssetExecutionContext, gateway: GatewayResource, storyboard: dict[str, Any],
               style_sheet: dict[str, Any], character_sheets: dict[str, Any],
               backgrounds: dict[str, Any]):  # -> MaterializeResult (a bare annotation beside checks means Nothing)
        series, _ = load_inputs(context, gateway)
        board = Storyboard.model_validate(storyboard)
        style = ImageSet.model_validate(style_sheet).items[0]
        chars = ImageSet.model_validate(character_sheets).by_item()
        plates = ImageSet.model_validate(backgrounds).by_item()
        requests = [panel_request(series, context.partition_key, plan,
                                  panel_references(series, plan, style, chars, plates)) for plan in board.panels]
        consistency = ConsistencyScores(series, board, ImageSet.model_validate(character_sheets))
        result = make_images(context, gateway, series, "panels", requests, on_result=consistency.add)
        return MaterializeResult(value=result.value, metadata=result.metadata, check_results=[
            cost_check(gateway.layout, series, context.partition_key), consistency.result()])

    return panels
