"""Lettered panels: the dialogue, thoughts, captions and effects drawn onto each clean panel.

Lettering is its own step after generation, so a change of words re-letters without a new
image: the panels it reads are cache hits (no dialogue ever enters an image prompt). The clean
panel is kept beside the lettered one."""

from concurrent.futures import ThreadPoolExecutor

from dagster import AssetExecutionContext, AssetsDefinition, DynamicPartitionsDefinition, MaterializeResult, MetadataValue
from PIL import Image

from webtoon_assets.assets.partitions import episode_asset
from webtoon_assets.files import atomic_path
from webtoon_assets.letter import draw_lettering, layout
from webtoon_assets.manifests import ImageSet, LetteredPanel, LetteredSet, PanelPlan, Storyboard
from webtoon_assets.png import save_png
from webtoon_assets.resources import DataRootResource
from webtoon_assets.resources.previews import contact_sheet_md, thumbnail


LETTERING_THREADS = 2


def lettered_panels_asset(series_id: str, partitions: DynamicPartitionsDefinition) -> AssetsDefinition:
    @episode_asset(series_id, partitions, kinds={"image"},
                   description="Each panel lettered: balloons with tails, thought clouds, captions, sound effects.")
    def lettered_panels(context: AssetExecutionContext, data: DataRootResource, storyboard: Storyboard,
                        panels: ImageSet) -> MaterializeResult[LetteredSet]:
        board = storyboard
        clean = panels.by_item()
        out_dir = data.layout.output_dir(series_id, context.partition_key) / "lettered"

        def letter(plan: PanelPlan) -> tuple[LetteredPanel, Image.Image]:
            src = clean[plan.id]
            found = {c: src.boxes[c] for c in src.boxes_detected if src.boxes and c in src.boxes}
            with Image.open(src.path) as im:
                lettering = layout(plan, im.width, im.height, found)
                lettered = draw_lettering(im, lettering)
            dest = out_dir / f"{plan.id}.png"
            with atomic_path(dest) as tmp:  # an intermediate the strip reads: fast to write, not small
                save_png(lettered, tmp, level=1)
            return LetteredPanel(item=plan.id, path=str(dest), clean_path=src.path, width=lettered.width,
                                 height=lettered.height, lettering=[i.to_json() for i in lettering.items],
                                 warnings=lettering.warnings,
                                 tails_from=src.boxes_source if found else "panel-line"), thumbnail(lettered)

        items, warnings, thumbs = [], [], []
        # Decoding, drawing and encoding let go of the GIL: two panels at a time, kept in order.
        with ThreadPoolExecutor(max_workers=LETTERING_THREADS, thread_name_prefix="letter") as pool:
            for item, thumb in pool.map(letter, board.panels):
                for w in item.warnings:
                    context.log.warning(w)
                warnings += item.warnings
                items.append(item)
                thumbs.append(thumb)
        context.log.info(f"lettered_panels: {len(items)} panel(s), {sum(len(i.lettering) for i in items)} item(s), "
                         f"{len(warnings)} warning(s)")
        return MaterializeResult(
            value=LetteredSet(series=board.series, episode=board.episode, items=items),
            metadata={
                "panels": len(items),
                "balloons": sum(len(i.lettering) for i in items),
                "warnings": len(warnings),
                # where the tails point: detected boxes (consistency.detector) or the PANEL line's order
                "tails_from_detected_boxes": sum(i.tails_from != "panel-line" for i in items),
                "tails_from_panel_line": sum(i.tails_from == "panel-line" for i in items),
                "warning_list": MetadataValue.md("\n".join(f"- {w}" for w in warnings) or "_none_"),
                "folder": MetadataValue.path(str(out_dir)),
                "preview": MetadataValue.md(contact_sheet_md(thumbs)),
            },
        )

    return lettered_panels
