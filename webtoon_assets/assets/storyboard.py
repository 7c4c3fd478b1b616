"""The storyboard: the validated panel plan, from the episode's script or, for a prose episode,
from a text model (offline: a deterministic splitter) through the gateway. Its pre-flight quote
prices the whole episode before anything is paid."""

from dagster import (AssetExecutionContext, AssetsDefinition, DynamicPartitionsDefinition, Failure, MaterializeResult,
                     MetadataValue)

from webtoon_assets.assets.partitions import GENERATION_POOL, episode_asset
from webtoon_assets.bible import BibleError, Episode, ProseScript, script_path
from webtoon_assets.files import write_text_atomic
from webtoon_assets.manifests import Storyboard
from webtoon_assets.recipes import episode_requests
from webtoon_assets.resources import GatewayResource, GenerationSession
from webtoon_assets.storyboard import plan_storyboard
from webtoon_assets.storyboard.prose import episode_from_output, prose_request


def from_prose(s: GenerationSession, script: ProseScript) -> tuple[Episode, dict]:
    """Ask the text model (through the gateway: priced, cached, in the ledger), then validate."""
    series = s.series()
    result = s.generate_text(prose_request(series, script))
    source = f"{result.request.endpoint} via {s.provider}, request {result.key[:12]}"
    try:
        episode, text = episode_from_output(result.text, series, script, source)
    except BibleError as e:  # a bad answer is refused whole; bump `Take:` in the header to ask again
        raise Failure(description=f"{e}\n(the answer is kept in the store; add or raise 'Take: N' in the "
                                  f"header of {script.path} to ask the model again)", allow_retries=False) from e
    out = s.layout.output_dir(series.id, script.id) / "script_from_prose.txt"
    write_text_atomic(out, text)
    s.context.log.info(f"storyboard {script.id}: prose -> {len(episode.panels)} panels ({result.status}, "
                       f"${result.row.billed_usd} billed, list ${result.row.list_usd})")
    return episode, {"source": source, "converted_script": MetadataValue.path(str(out))}


def storyboard_asset(series_id: str, partitions: DynamicPartitionsDefinition) -> AssetsDefinition:
    @episode_asset(series_id, partitions, kinds={"json"}, pool=GENERATION_POOL,
                   description="Per panel: shot, camera, aspect, width, characters, location, prompt and its parts, "
                               "dialogue, reading order, pace and gutter. Prose episodes go through a text model.")
    def storyboard(context: AssetExecutionContext, gateway: GatewayResource) -> MaterializeResult[Storyboard]:
        with gateway.session(context) as s:
            series, script = s.series(), s.script()
            extra: dict = {}
            if isinstance(script, ProseScript):
                episode, extra = from_prose(s, script)
            else:
                episode = script
            board = Storyboard(series=series.id, episode=episode.id, title=episode.title,
                               panels=plan_storyboard(series, episode), source=extra.pop("source", "script"))
            quote = s.preflight(episode_requests(s.gateway, series, episode.id, board), f"episode {episode.id}")
            rows = ["| # | panel | shot | camera | aspect | width | characters | location | pace | gutter | lines |",
                    "|---|---|---|---|---|---|---|---|---|---|---|"]
            drawn = {p.id: [*map(p.sheet, p.characters), *(f"prop:{x}" for x in p.props)] for p in board.panels}
            rows += [f"| {p.order} | {p.id} | {p.shot} | {p.camera} | {p.aspect} | {p.width} {p.align} | "
                     f"{', '.join(drawn[p.id]) or '-'} | {p.location} | {p.pace} | {p.gutter} | "
                     f"{len(p.dialogue) + len(p.captions) + len(p.sfx)} |" for p in board.panels]
            context.log.info(f"storyboard {episode.id}: {len(board.panels)} panels in {len(episode.scenes)} scenes")
            return s.materialize(board, {
                "panels": len(board.panels),
                "scenes": len(episode.scenes),
                "characters": MetadataValue.text(", ".join(board.characters())),
                "locations": MetadataValue.text(", ".join(episode.locations())),
                **({"props": MetadataValue.text(", ".join(board.props()))} if board.props() else {}),
                "script": MetadataValue.path(str(script_path(s.layout, series.id, episode.id))),
                "plan": MetadataValue.md("\n".join(rows)),
                "to_make_usd": float(quote.usd),  # what making the rest of the episode costs now, at list price
                "to_make": len(quote.misses),
                **extra,
            })

    return storyboard
