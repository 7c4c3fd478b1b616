"""Character LoRAs (series.yaml ``models.loras.train``): one LoRA per character, trained on fal's
FLUX.2 trainer from its sheets and accepted panels, through the gateway like every paid call
(cached by its training data's content, steps and learning rate; budget-reserved; journalled; a
ledger row per attempt; priced per step from the price book), paid once and, being reusable,
amortised over the season like the character sheets. Offline the local provider stands in with
a small placeholder file at the trainer's list price, so an offline season quotes the training."""


from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, DynamicPartitionsDefinition, MaterializeResult, \
    MetadataValue

from webtoon_assets.assets.partitions import GENERATION_POOL, episode_asset
from webtoon_assets.bible import Episode, Series, episode_ids, load_episode
from webtoon_assets.consistency.lora_cost import LoraCost, lora_cost
from webtoon_assets.paths import DataLayout
from webtoon_assets.pricing import load_pricebook
from webtoon_assets.manifests import ImageSet, Storyboard
from webtoon_assets.recipes.loras import (LoraSet, TrainedLora, load_record, lora_request, recorded_request,
                                          save_record, training_images, training_zip)
from webtoon_assets.resources import GatewayResource
from webtoon_assets.storyboard import plan_storyboard


def character_loras_asset(series_id: str, partitions: DynamicPartitionsDefinition) -> AssetsDefinition:
    @episode_asset(series_id, partitions, kinds={"lora"}, pool=GENERATION_POOL,
                   deps=[AssetKey([series_id, "storyboard"])],
                   description="A LoRA per character of the episode, when series.yaml models.loras.train is on "
                               "(fal-ai/flux-2-trainer; paid once, amortised over the season).")
    def character_loras(context: AssetExecutionContext, gateway: GatewayResource, storyboard: Storyboard,
                        character_sheets: ImageSet) -> MaterializeResult[LoraSet]:
        with gateway.session(context) as s:
            series = s.series()
            cfg = series.models.loras
            if not cfg.train:
                return s.materialize(LoraSet(series=series.id, episode=s.episode),
                                     {"loras": 0, "note": "models.loras.train is off: panels use no LoRA"})
            output_root = s.layout.output_dir(series.id)
            record = load_record(output_root, series.id)
            requests, images = {}, {}
            for cid in storyboard.characters():
                known = record.loras.get(cid)
                if known is not None:  # trained already: the same request, a cache hit (never a retraining)
                    requests[cid] = recorded_request(series, s.episode, known)
                    images[cid] = known.images
                    continue
                found = training_images(output_root, cid, character_sheets.items, cfg.max_panels)
                if not found:
                    context.log.warning(f"{cid}: no sheet or accepted panel to train on; no LoRA")
                    continue
                data = training_zip(s.layout.store / "training", cid, found)
                requests[cid] = lora_request(series, s.episode, cid, data)
                images[cid] = [i.sha256 for i in found]
            s.preflight(list(requests.values()), f"character_loras of {s.episode}", only_if_limited=True)
            loras = []
            for cid, request in requests.items():
                result = s.gateway.generate_file(request)
                s.results.append(result)
                lora = record.loras.get(cid) or TrainedLora(
                    character=cid, trigger=request.arguments["default_caption"], key=result.key,
                    path=str(result.path), sha256=result.sha256, trainer=request.endpoint,
                    steps=request.arguments["steps"], learning_rate=request.arguments["learning_rate"],
                    training_data=request.training_data, images=images[cid], episode=s.episode,
                    provider=result.provider, stand_in=result.stand_in, list_usd=str(result.row.list_usd))
                if cid not in record.loras:
                    record.loras[cid] = lora
                    save_record(output_root, record)
                loras.append(lora)
            table = "\n".join(["| character | status | trigger | images | steps | spent | quote | file |",
                               "|---|---|---|---|---|---|---|---|"] + [
                f"| {lo.character} | {'paid' if r.status == 'generated' else 'hit'} | `{lo.trigger}` | "
                f"{len(lo.images)} | {lo.steps} | ${r.row.billed_usd} | ${r.row.list_usd} | "
                f"{'stand-in (offline placeholder)' if lo.stand_in else lo.sha256[:12]} |"
                for lo, r in zip(loras, s.results)])
            return s.materialize(LoraSet(series=series.id, episode=s.episode, loras=loras), {
                "loras": len(loras), "items": MetadataValue.md(table),
                "stand_in": any(lo.stand_in for lo in loras),
                "note": ("offline: each LoRA is a placeholder file priced at the trainer's list price, not "
                         "trained weights" if any(lo.stand_in for lo in loras) else "trained on " +
                         ", ".join(sorted({lo.provider for lo in loras})) if loras else "no character to train"),
            })

    return character_loras


def series_lora_cost(layout: DataLayout, series: Series) -> LoraCost:
    """The LoRA branch's cost for the decision tree: per character from the price book, and per panel
    over the planned season at the scripts' average panels per episode."""
    episodes = [e for e in (load_episode(layout, series, i) for i in episode_ids(layout, series.id))
                if isinstance(e, Episode)]
    counts = [len(plan_storyboard(series, e)) for e in episodes]
    return lora_cost(series, load_pricebook(layout.pricebook), sum(counts) / len(counts) if counts else None)
