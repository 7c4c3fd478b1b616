"""The storyboard: the validated panel plan, from the episode's script or, for a prose episode,
from a text model (offline: a deterministic splitter) through the gateway. Stored as JSON."""

from dagster import (AssetExecutionContext, AssetsDefinition, DynamicPartitionsDefinition, Failure,
                     MaterializeResult, MetadataValue)

from webtoon_assets.assets.common import load_inputs, preflight
from webtoon_assets.recipes.episode import episode_requests
from webtoon_assets.assets.partitions import GENERATION_POOL, episode_asset
from webtoon_assets.bible import BibleError, Episode, ProseScript, Series, script_path
from webtoon_assets.costs import refresh_cost_tables
from webtoon_assets.gateway.budget import BudgetExceeded
from webtoon_assets.gateway.resource import GatewayResource
from webtoon_assets.gateway.retry import GenerationFailed
from webtoon_assets.manifests import Storyboard
from webtoon_assets.pricing import QuoteError, UnknownEndpoint
from webtoon_assets.storyboard import plan_storyboard
from webtoon_assets.storyboard.prose import episode_from_output, prose_request


def from_prose(context: AssetExecutionContext, gateway: GatewayResource, series: Series, script: ProseScript
               ) -> tuple[Episode, dict]:
    """Ask the text model (through the gateway: priced, cached, in the ledger), then validate."""
    gw = gateway.gateway
    try:
        result = gw.generate_text(prose_request(series, script))
    except (BudgetExceeded, UnknownEndpoint, QuoteError, GenerationFailed) as e:
        raise Failure(description=str(e), allow_retries=False) from e
    finally:
        refresh_cost_tables(gateway.layout, log=context.log.warning)
    source = f"{result.request.endpoint} via {gw.provider.name}, request {result.key[:12]}"
    try:
        episode, text = episode_from_output(result.text, series, script, source)
    except BibleError as e:  # a bad answer is refused whole; bump `Take:` in the header to ask again
        raise Failure(description=f"{e}\n(the answer is kept in the store; add or raise 'Take: N' in the "
                                  f"header of {script.path} to ask the model again)", allow_retries=False) from e
    out = gateway.layout.output_dir(series.id, script.id) / "script_from_prose.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    context.log.info(f"storyboard {script.id}: prose -> {len(episode.panels)} panels ({result.status}, "
                     f"${result.row.billed_usd} billed, list ${result.row.list_usd})")
    return episode, {"source": source, "converted_script": MetadataValue.path(str(out)),
                     "cost_usd": float(result.row.billed_usd), "list_usd": float(result.row.list_usd),
                     "generations": int(result.status == "generated"), "cache_hits": int(result.status == "cached")}


def build(series_id: str, partitions: DynamicPartitionsDefinition) -> AssetsDefinition:
    @episode_asset(series_id, partitions, kinds={"json"}, pool=GENERATION_POOL,
                   description="Per panel: shot, camera, aspect, width, characters, location, prompt and its parts, "
                               "dialogue, reading order, pace and gutter. Prose episodes go through a text model.")
    def storyboard(context: AssetExecutionContext, gateway: GatewayResource) -> MaterializeResult:
        series, script = load_inputs(context, gateway)
        extra: dict = {}
        if isinstance(script, ProseScript):
            episode, extra = from_prose(context, gateway, series, script)
        else:
            episode = script
        board = Storyboard(series=series.id, episode=episode.id, title=episode.title,
                           panels=plan_storyboard(series, episode), source=extra.get("source", "script"))
        quote = preflight(context, gateway, series, episode_requests(gateway.gateway, series, episode.id, board),
                          f"episode {episode.id}")
        rows = ["| # | panel | shot | camera | aspect | width | characters | location | pace | gutter | lines |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        rows += [f"| {p.order} | {p.id} | {p.shot} | {p.camera} | {p.aspect} | {p.width} {p.align} | "
                 f"{', '.join(p.characters) or '-'} | {p.location} | {p.pace} | {p.gutter} | "
                 f"{len(p.dialogue) + len(p.captions) + len(p.sfx)} |" for p in board.panels]
        context.log.info(f"storyboard {episode.id}: {len(board.panels)} panels in {len(episode.scenes)} scenes")
        return MaterializeResult(value=board, metadata={
            "panels": len(board.panels),
            "scenes": len(episode.scenes),
            "characters": MetadataValue.text(", ".join(board.characters())),
            "locations": MetadataValue.text(", ".join(episode.locations())),
            "script": MetadataValue.path(str(script_path(gateway.layout, series.id, episode.id))),
            "plan": MetadataValue.md("\n".join(rows)),
            "episode_quote_usd": float(quote.usd),  # what making the rest of the episode costs now
            "to_make": len(quote.misses),
            **{k: v for k, v in extra.items() if k != "source"},
        })

    return storyboard
