"""The season's reader: one index page linking every episode made so far (their pages are written by
episode_strip). Not partitioned: it follows every episode's strip, in the season job and, for runs
launched from the UI, by its automation condition."""

from dagster import (AssetExecutionContext, AssetKey, AssetsDefinition, AutomationCondition, MaterializeResult,
                     MetadataValue, asset)
from filelock import FileLock

from webtoon_assets.bible import episode_ids
from webtoon_assets.manifests import Storyboard
from webtoon_assets.reader.html import write_index
from webtoon_assets.resources import DataRootResource


def season_reader_asset(series_id: str) -> AssetsDefinition:
    @asset(key=AssetKey([series_id, "season_reader"]), group_name=series_id, kinds={"html"},
           deps=[AssetKey([series_id, "episode_strip"])], automation_condition=AutomationCondition.eager(),
           description="index.html: the season's reader, linking every episode whose strip is made.")
    def season_reader(context: AssetExecutionContext, data: DataRootResource) -> MaterializeResult:
        layout, series = data.layout, data.series(series_id)
        root = layout.output_dir(series_id)
        root.mkdir(parents=True, exist_ok=True)
        # Episodes' runs end at once (a backfill, the demo): each looks and writes under the lock, so
        # the last index written is from the last look, which saw every strip finished before it.
        with FileLock(root / ".index.lock"):
            made = []
            for e in episode_ids(layout, series_id):
                if not (root / e / "reader.html").is_file():
                    continue
                board = root / e / "storyboard.json"
                title = Storyboard.model_validate_json(board.read_text(encoding="utf-8")).title if board.is_file() else e
                made.append((e, title, root / e / "reader.html", root / e / "thumbnail.jpg"))
            index = write_index(root / "index.html", series.title, made)
        context.log.info(f"season reader: {len(made)} episode(s) -> {index}")
        return MaterializeResult(metadata={
            "reader": MetadataValue.url(index.as_uri()),
            "episodes": len(made),
            "made": MetadataValue.md("\n".join(f"- [{e}: {t}]({p.as_uri()})" for e, t, p, _ in made) or "_none yet_"),
        })

    return season_reader
