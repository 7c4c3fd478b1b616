"""Panels: one image per storyboard panel, conditioned on its character sheets, background and style."""

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, DynamicPartitionsDefinition

from webtoon_assets.assets.checks import consistency_spec
from webtoon_assets.assets.consistency_gate import ConsistencyGate
from webtoon_assets.assets.partitions import GENERATION_POOL, episode_asset
from webtoon_assets.manifests import ImageSet, Storyboard
from webtoon_assets.recipes import panel_references, panel_request
from webtoon_assets.recipes.loras import episode_loras, with_loras
from webtoon_assets.recipes.packing import packed_references
from webtoon_assets.resources import GatewayResource


def panels_asset(series_id: str, partitions: DynamicPartitionsDefinition) -> AssetsDefinition:
    # The output's type is given here: beside check specs, a return annotation would be read as the checks'.
    @episode_asset(series_id, partitions, kinds={"image"}, pool=GENERATION_POOL, dagster_type=ImageSet,
                   check_specs=[consistency_spec(series_id, partitions)],
                   deps=[AssetKey([series_id, "character_loras"])],  # models.loras: panels use the LoRAs
                   description="One image per panel; its character sheets, background and style are sent as references.")
    def panels(context: AssetExecutionContext, gateway: GatewayResource, storyboard: Storyboard,
               style_sheet: ImageSet, character_sheets: ImageSet, backgrounds: ImageSet, prop_sheets: ImageSet):
        with gateway.session(context) as s:
            series = s.series()
            style, chars, plates = style_sheet.items[0], character_sheets.by_item(), backgrounds.by_item()
            props = prop_sheets.by_item()
            packs = s.layout.store / "packed"  # the references packed into fewer images, if the series asks
            loras = episode_loras(s.layout.output_dir(series.id, s.episode), series)
            requests = [with_loras(series, panel_request(series, s.episode, plan, packed_references(
                series, panel_references(series, plan, style, chars, plates, props), packs)),
                plan, loras) for plan in storyboard.panels]
            # each panel scored as it lands; under series.yaml consistency.gate, retaken and the best take kept
            gate = ConsistencyGate(s, storyboard, character_sheets)
            manifest, meta = gate.settle(requests, *s.make_images("panels", requests, on_result=gate.add))
            return s.materialize(manifest, meta, [gate.check_result()])

    return panels
