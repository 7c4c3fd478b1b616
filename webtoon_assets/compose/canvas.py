"""The episode as a vertical strip, and its WEBTOON Canvas upload: slices cut in the gutters.

WEBTOON Canvas takes images 800 px wide, at most 1280 px tall and 2 MB each, at most 20 MB an
episode, JPG or PNG. The strip is laid out once at the panels' own resolution (creators draw at
about 2x and downscale), then scaled to 800 px and cut: each cut falls in a gutter where one is in
reach; a panel taller than a slice is cut where no balloon is. Panels are pasted one at a time.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from webtoon_assets.files import atomic_path, write_bytes_atomic

STRIP_WIDTH = 800  # WEBTOON Canvas width
MAX_SLICE_HEIGHT = 1280
MAX_SLICE_BYTES = 2 * 1024 * 1024
MAX_EPISODE_BYTES = 20 * 1024 * 1024
INSET_SHARE = 0.7  # an inset panel's width, as a share of the strip
MIN_SLICE = 320  # no slivers: a cut leaves at least this much above it
THUMBNAIL = (160, 151)  # WEBTOON Canvas episode thumbnail


@dataclass
class Placed:
    """One panel on the strip, in 800 px coordinates."""

    id: str
    path: Path
    x: int
    y: int
    width: int
    height: int
    balloons: list[tuple[int, int, int, int]] = field(default_factory=list)

    @property
    def bottom(self) -> int:
        return self.y + self.height


@dataclass
class PanelIn:
    id: str
    path: Path
    gutter: int  # px below, at 800 px
    width: str  # full | inset
    align: str  # center | left | right
    balloons: list[tuple[int, int, int, int]] = field(default_factory=list)  # in the panel's own pixels


def lay_out(panels: list[PanelIn], width: int = STRIP_WIDTH) -> tuple[list[Placed], int]:
    placed, y = [], 0
    for p in panels:
        with Image.open(p.path) as im:  # the header only
            pw, ph = im.size
        w = width if p.width == "full" else int(width * INSET_SHARE)
        x = {"left": 0, "right": width - w}.get(p.align, (width - w) // 2)
        h = round(ph * w / pw)
        k = w / pw
        boxes = [(x + int(b[0] * k), y + int(b[1] * k), x + int(b[2] * k), y + int(b[3] * k)) for b in p.balloons]
        placed.append(Placed(p.id, p.path, x, y, w, h, boxes))
        y += h + p.gutter
    return placed, max(y, 1)


def render(placed: list[Placed], height: int, scale: float = 1.0, width: int = STRIP_WIDTH) -> Image.Image:
    canvas = Image.new("RGB", (round(width * scale), round(height * scale)), "white")
    for p in placed:
        with Image.open(p.path) as im:
            size = (round(p.width * scale), round(p.height * scale))
            canvas.paste(im.convert("RGB").resize(size, Image.Resampling.LANCZOS), (round(p.x * scale), round(p.y * scale)))
    return canvas


def cut_points(placed: list[Placed], height: int, limit: int = MAX_SLICE_HEIGHT) -> tuple[list[int], int]:
    """Where to cut the 800 px strip: in a gutter when one is in reach, else (a panel taller than a
    slice) at the lowest line that crosses no balloon. Returns the cuts and how many cross a panel."""
    gutters = [(a.bottom, b.y) for a, b in zip(placed, placed[1:]) if b.y > a.bottom]
    cuts, top, through = [], 0, 0
    while height - top > limit:
        reach = top + limit
        in_reach = [(g0 + g1) // 2 for g0, g1 in gutters if top + MIN_SLICE <= (g0 + g1) // 2 <= reach]
        if in_reach:
            cut = max(in_reach)
        else:
            balloons = [b for p in placed for b in p.balloons]
            clear = [y for y in range(reach, top + MIN_SLICE, -2) if not any(b[1] <= y <= b[3] for b in balloons)]
            cut = clear[0] if clear else reach
            through += 1
        cuts.append(cut)
        top = cut
    return cuts, through


def save_jpeg_slices(strip: Image.Image, cuts: list[int], folder: Path) -> tuple[list[tuple[Path, int, int]], int]:
    """Write the slices as JPEG at the highest quality that keeps every slice under 2 MB and the
    episode under 20 MB. Returns (path, height, bytes) per slice and the quality used."""
    bounds = list(zip([0, *cuts], [*cuts, strip.height]))
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.jpg"):
        old.unlink()
    for quality in range(92, 39, -4):
        blobs = []
        for y0, y1 in bounds:
            buf = io.BytesIO()
            strip.crop((0, y0, strip.width, y1)).save(buf, format="JPEG", quality=quality, optimize=True,
                                                       progressive=True)
            blobs.append(buf.getvalue())
        if max(map(len, blobs)) <= MAX_SLICE_BYTES and sum(map(len, blobs)) <= MAX_EPISODE_BYTES:
            break
    out = []
    for i, ((y0, y1), blob) in enumerate(zip(bounds, blobs), start=1):
        path = write_bytes_atomic(folder / f"{i:03d}.jpg", blob)
        out.append((path, y1 - y0, len(blob)))
    return out, quality


def save_png(image: Image.Image, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        image.save(tmp, format="PNG", compress_level=6)


def thumbnail(placed: list[Placed], dest: Path) -> None:
    """The first panel, cropped to WEBTOON's episode thumbnail."""
    from PIL import ImageOps

    with Image.open(placed[0].path) as im, atomic_path(dest) as tmp:
        ImageOps.fit(im.convert("RGB"), THUMBNAIL).save(tmp, format="JPEG", quality=90)
