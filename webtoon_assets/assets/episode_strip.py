"""The episode strip and its WEBTOON Canvas export: 800 px slices cut in the gutters (JPEG, each
at most 1280 px tall and 2 MB, the episode at most 20 MB), a thumbnail, and the episode's page of
the local reader. A blocking check holds the upload limits.

The slices are the upload, and the reader shows them: each is composed from the panels that cross
it, encoded and let go, so the episode's strip is never whole in memory. The whole strip as PNG,
at 800 px (``strip.png``) and at the panels' own resolution (``strip_full.png``), is written only
when asked (``full_strips`` in the asset's config; the manifest's ``path`` and ``full_path`` are
None otherwise): it costs several times the slices (a full-resolution strip of a 68-panel episode
is hundreds of megapixels to resize and compress), for a file the upload does not use."""

from pathlib import Path

from dagster import (AssetCheckResult, AssetCheckSeverity, AssetExecutionContext, AssetKey,
                     AssetsDefinition, Config, DynamicPartitionsDefinition, Failure, MaterializeResult, MetadataValue)
from pydantic import Field

from webtoon_assets.assets.checks import episode_check_spec
from webtoon_assets.assets.partitions import episode_asset
from webtoon_assets.bible import episode_ids
from webtoon_assets.compose import canvas
from webtoon_assets.manifests import LetteredSet, Slice, Storyboard, Strip
from webtoon_assets.reader.html import write_episode
from webtoon_assets.resources import DataRootResource
from webtoon_assets.resources.previews import contact_sheet_md, thumbnail

CHECK = "webtoon_canvas_limits"


class EpisodeStripConfig(Config):
    full_strips: bool = Field(
        default=False, description="also write the whole strip as PNG: strip.png at 800 px and strip_full.png at "
                                   "the panels' own resolution (streamed band by band; several times the time "
                                   "of the slices, which are the upload)")


def limits_check(strip: Strip) -> AssetCheckResult:
    problems = []
    for s in strip.slices:
        name = Path(s.path).name
        if s.width != canvas.STRIP_WIDTH:
            problems.append(f"{name}: {s.width} px wide, not {canvas.STRIP_WIDTH}")
        if s.height > canvas.MAX_SLICE_HEIGHT:
            problems.append(f"{name}: {s.height} px tall, over {canvas.MAX_SLICE_HEIGHT}")
        if s.bytes > canvas.MAX_SLICE_BYTES:
            problems.append(f"{name}: {s.bytes} bytes, over {canvas.MAX_SLICE_BYTES}")
        if Path(s.path).suffix.lower() not in (".jpg", ".jpeg", ".png"):
            problems.append(f"{name}: not JPG or PNG")
    if strip.total_bytes > canvas.MAX_EPISODE_BYTES:
        problems.append(f"episode: {strip.total_bytes} bytes, over {canvas.MAX_EPISODE_BYTES}")
    return AssetCheckResult(
        check_name=CHECK, passed=not problems, severity=AssetCheckSeverity.ERROR,
        description=f"{strip.episode}: " + ("; ".join(problems) or f"every slice fits WEBTOON Canvas "
                                                                   f"({len(strip.slices)} slices)"),
        metadata={"slices": len(strip.slices), "total_bytes": strip.total_bytes,
                  "tallest_slice": max(s.height for s in strip.slices),
                  "largest_slice_bytes": max(s.bytes for s in strip.slices),
                  "cuts_through_panels": strip.cuts_through_panels},
    )


def episode_strip_asset(series_id: str, partitions: DynamicPartitionsDefinition) -> AssetsDefinition:
    key = AssetKey([series_id, "episode_strip"])

    @episode_asset(series_id, partitions, kinds={"image", "html"}, dagster_type=Strip,
                   check_specs=[episode_check_spec(CHECK, partitions, asset=key, blocking=True,
                                                   description="WEBTOON Canvas: 800 px wide, <= 1280 px and 2 MB "
                                                               "a slice, <= 20 MB an episode, JPG or PNG")],
                   description="The episode as WEBTOON Canvas slices, a thumbnail and a reader (and, when "
                               "asked, the whole strip as PNG).")
    def episode_strip(context: AssetExecutionContext, config: EpisodeStripConfig, data: DataRootResource,
                      storyboard: Storyboard, lettered_panels: LetteredSet):
        # returns MaterializeResult[Strip] (typed by dagster_type)
        board = storyboard
        lettered = lettered_panels.by_item()
        missing = [p.id for p in board.panels if p.id not in lettered]
        if missing:
            raise Failure(description=f"panels {missing} of the storyboard are not lettered: materialize "
                                      "lettered_panels again", allow_retries=False)
        layout, series = data.layout, data.series(series_id)
        out = layout.output_dir(series.id, context.partition_key)
        panels_in = [canvas.PanelIn(p.id, Path(lettered[p.id].path), p.gutter, p.width, p.align,
                                    [tuple(i["box"]) for i in lettered[p.id].lettering]) for p in board.panels]
        placed, height = canvas.lay_out(panels_in)  # the panels' headers only: no pixels yet
        cuts, through = canvas.cut_points(placed, height)
        strip_png = full_png = None
        if config.full_strips:
            # strip.png from the slices' own bands as they are composed (no pass of its own)
            strip_png, full_png = out / "strip.png", out / "strip_full.png"
            with canvas.png_stream(strip_png, canvas.STRIP_WIDTH, height) as png:
                slices, quality = canvas.save_jpeg_slices(placed, height, cuts, out / "webtoon",
                                                          on_band=canvas.InOrder(png.write))
            scale = max(lettered[p.id].width / q.width for p, q in zip(board.panels, placed))
            canvas.save_strip_png(placed, height, full_png, scale=scale)
        else:
            slices, quality = canvas.save_jpeg_slices(placed, height, cuts, out / "webtoon")
            for old in (out / "strip.png", out / "strip_full.png"):  # not this materialization's
                old.unlink(missing_ok=True)
        canvas.thumbnail(placed, out / "thumbnail.jpg")

        # this episode's reader page; the season's index is the season_reader asset, downstream
        root = layout.output_dir(series.id)
        eps = episode_ids(layout, series.id)
        i = eps.index(board.episode) if board.episode in eps else 0
        page = out / "reader.html"
        write_episode(page, series.title, board.episode, board.title, [s[0] for s in slices],
                      root / eps[i - 1] / "reader.html" if i > 0 else None,
                      root / eps[i + 1] / "reader.html" if i + 1 < len(eps) else None, root / "index.html")

        strip = Strip(series=board.series, episode=board.episode, path=str(strip_png) if strip_png else None,
                      full_path=str(full_png) if full_png else None, width=canvas.STRIP_WIDTH, height=height,
                      panels=len(board.panels),
                      slices=[Slice(path=str(p), width=canvas.STRIP_WIDTH, height=h, bytes=b) for p, h, b in slices],
                      total_bytes=sum(b for *_, b in slices), jpeg_quality=quality, cuts_through_panels=through,
                      thumbnail=str(out / "thumbnail.jpg"), reader=str(page))
        context.log.info(f"episode_strip {board.episode}: {height}px in {len(slices)} slices "
                         f"({strip.total_bytes / 1e6:.1f} MB, JPEG q{quality}) -> {page}")
        return MaterializeResult(value=strip, check_results=[limits_check(strip)], metadata={
            "reader": MetadataValue.url(page.as_uri()),
            "slices": len(slices),
            "total_mb": round(strip.total_bytes / 1e6, 3),
            "jpeg_quality": quality,
            "height": height,
            "cuts_through_panels": through,
            "panels": len(board.panels),
            "full_strips": config.full_strips,
            "preview": MetadataValue.md(contact_sheet_md([thumbnail(Path(s[0]), 120, 4000) for s in slices[:3]],
                                                         columns=3)),
        })

    return episode_strip
