"""The episode as a vertical strip, and its WEBTOON Canvas upload: slices cut in the gutters.

WEBTOON Canvas takes images 800 px wide, at most 1280 px tall and 2 MB each, at most 20 MB an
episode, JPG or PNG. The strip is laid out once at the panels' own resolution (creators draw at
about 2x and downscale), then scaled to 800 px and cut: each cut falls in a gutter where one is in
reach; a panel taller than a slice is cut where no balloon is.

The layout reads only the panels' headers, so the cuts are known before any pixel; then each slice
is composed on a canvas of its own from the panels that cross it, encoded and let go
(:func:`bands`, :func:`save_jpeg_slices`): an episode's strip is never whole in memory. The whole
strip as a PNG, at 800 px or at the panels' resolution, is written the same way, band by band
(:func:`save_strip_png`, :mod:`webtoon_assets.png`).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from webtoon_assets.png import PngWriter
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
    """The whole strip as one image: the reference that :func:`bands` is equal to, band by band.
    For small strips and tests only; the asset never holds an episode's strip whole."""
    canvas = Image.new("RGB", (round(width * scale), round(height * scale)), "white")
    for p in placed:
        with Image.open(p.path) as im:
            size = (round(p.width * scale), round(p.height * scale))
            canvas.paste(im.convert("RGB").resize(size, Image.Resampling.LANCZOS), (round(p.x * scale), round(p.y * scale)))
    return canvas


def _resized(path: Path, size: tuple[int, int]) -> Image.Image:
    with Image.open(path) as im:
        return (im if im.mode == "RGB" else im.convert("RGB")).resize(size, Image.Resampling.LANCZOS)


def bands(placed: list[Placed], edges: Iterable[tuple[int, int]], scale: float = 1.0,
          width: int = STRIP_WIDTH) -> Iterator[Image.Image]:
    """Rows ``y0``..``y1`` of the strip at ``scale``, for each (y0, y1) of ``edges`` (rows of the
    scaled strip), pixel for pixel what cropping :func:`render`'s image would give, without ever
    making it: a band is a canvas of its own, and only the panels that cross it are opened, resized
    and pasted. A panel that reaches into a later band is kept, resized, until the band below it;
    so memory holds one band and the panels crossing it (a panel taller than a band, whole), and
    the next :data:`PREFETCH` panels, which are decoded and resized on other threads (Pillow lets
    go of the GIL to do it) while this one composes and the caller encodes."""
    edges = list(edges)
    boxes = [(round(p.x * scale), round(p.y * scale), round(p.width * scale), round(p.height * scale)) for p in placed]
    crossing = [[i for i, (x, y, w, h) in enumerate(boxes) if y < y1 and y + h > y0 and w > 0 and h > 0]
                for y0, y1 in edges]
    with _Prefetch(placed, boxes, crossing) as resized:
        kept: dict[int, Image.Image] = {}
        for (y0, y1), panels in zip(edges, crossing):
            band = Image.new("RGB", (round(width * scale), y1 - y0), "white")
            for i in panels:
                x, y, w, h = boxes[i]
                im = kept.pop(i, None)
                if im is None:
                    im = resized(i)
                band.paste(im, (x, y - y0))
                if y + h > y1:
                    kept[i] = im
            for i in [i for i in kept if boxes[i][1] + boxes[i][3] <= y1]:
                del kept[i]
            yield band
            band = im = None  # let the caller's copy be the last (no two bands at once)


PREFETCH = 4  # panels resized ahead of the band being composed
PREFETCH_THREADS = 2


class _Prefetch:
    """The panels resized in the order the bands first need them, up to PREFETCH ahead, on a small
    pool; ``resized(i)`` waits for panel i's."""

    def __init__(self, placed: list[Placed], boxes: list[tuple[int, int, int, int]], crossing: list[list[int]]):
        seen: set[int] = set()
        self.order = [i for panels in crossing for i in panels if not (i in seen or seen.add(i))]
        self.placed, self.boxes, self.next = placed, boxes, 0
        self.futures: dict[int, Future] = {}

    def __enter__(self) -> Callable[[int], Image.Image]:
        self.pool = ThreadPoolExecutor(max_workers=PREFETCH_THREADS, thread_name_prefix="strip")
        return self.resized

    def __exit__(self, *exc) -> None:
        for f in self.futures.values():
            f.cancel()
        self.pool.shutdown(wait=True)
        self.futures.clear()

    def resized(self, i: int) -> Image.Image:
        while self.next < len(self.order) and (i not in self.futures or len(self.futures) < PREFETCH):
            j = self.order[self.next]
            self.futures[j] = self.pool.submit(_resized, self.placed[j].path, self.boxes[j][2:])
            self.next += 1
        return self.futures.pop(i).result()


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


QUALITIES = tuple(range(92, 39, -4))  # JPEG qualities, best first: the first that fits is used
ROUND_QUALITIES = 3  # when the episode is over 20 MB: qualities tried at once, per slice composed
# optimize=True (Huffman tables for the image) costs about a quarter more encoding time for about a
# sixth fewer bytes; progressive=True costs over three times the encoding for a few percent more, so no.
JPEG_OPTIONS = {"optimize": True}


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality, **JPEG_OPTIONS)
    return buf.getvalue()


def slice_bounds(cuts: list[int], height: int) -> list[tuple[int, int]]:
    return list(zip([0, *cuts], [*cuts, height]))


def save_jpeg_slices(placed: list[Placed], height: int, cuts: list[int], folder: Path,
                     on_band: Callable[[int, Image.Image], None] | None = None,
                     ) -> tuple[list[tuple[Path, int, int]], int]:
    """Compose each slice of the 800 px strip on its own (:func:`bands`), encode it and let it go:
    the strip is never whole. One JPEG quality for the episode, the highest of :data:`QUALITIES`
    that keeps every slice under 2 MB and the episode under 20 MB; in the common case each slice is
    encoded once. A slice over 2 MB is encoded again, lower, at once (its pixels are at hand), and
    the slices before it again at that quality at the end; an episode over 20 MB is composed again,
    each slice encoded at the next few qualities down at once, until one fits (or the lowest is
    used, and the limits check reports it). ``on_band(i, band)`` sees every composed slice, in
    order, at least once (a slice composed again is shown again). Returns (path, height, bytes) per
    slice and the quality."""
    bounds = slice_bounds(cuts, height)
    n = len(bounds)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.jpg"):
        old.unlink()
    paths = [folder / f"{i:03d}.jpg" for i in range(1, n + 1)]
    written: list[tuple[int, int]] = [(0, 0)] * n  # (quality, bytes) on disk

    def composed(indices: list[int]) -> Iterator[tuple[int, Image.Image]]:
        for i, band in zip(indices, bands(placed, [bounds[i] for i in indices])):
            if on_band is not None:
                on_band(i, band)
            yield i, band

    def write(i: int, quality: int, blob: bytes) -> None:
        write_bytes_atomic(paths[i], blob)
        written[i] = (quality, len(blob))

    # 1. each slice once, at the best quality still possible
    level, over, mixed, total = 0, False, False, 0
    for i, band in composed(list(range(n))):
        blob = encode_jpeg(band, QUALITIES[level])
        while len(blob) > MAX_SLICE_BYTES and level + 1 < len(QUALITIES):
            level += 1
            mixed = mixed or i > 0  # the slices above are at a higher quality now
            blob = encode_jpeg(band, QUALITIES[level])
        write(i, QUALITIES[level], blob)
        total += len(blob)
        if not mixed and total > MAX_EPISODE_BYTES:
            over = True  # the episode cannot fit at this quality, whatever the slices below weigh
            break
    # 2. a slice over 2 MB lowered the quality: the slices before it, again at the lower one
    if not over:
        quality = QUALITIES[level]
        for i, band in composed([i for i in range(n) if written[i][0] != quality]):
            write(i, quality, encode_jpeg(band, quality))
        over = (sum(b for _, b in written) > MAX_EPISODE_BYTES
                or max(b for _, b in written) > MAX_SLICE_BYTES)  # (a JPEG heavier at a lower quality)
    # 3. the episode over 20 MB: every slice composed again, encoded at the next qualities down
    while over and level + 1 < len(QUALITIES):
        trying = list(QUALITIES[level + 1:level + 1 + ROUND_QUALITIES])
        blobs: dict[int, list[bytes]] = {q: [] for q in trying}
        totals = dict.fromkeys(trying, 0)
        for i, band in composed(list(range(n))):
            for q in list(blobs):
                blob = encode_jpeg(band, q)
                totals[q] += len(blob)
                if len(blob) > MAX_SLICE_BYTES or totals[q] > MAX_EPISODE_BYTES:
                    del blobs[q]
                else:
                    blobs[q].append(blob)
            if not blobs:
                break
        level += len(trying)
        if blobs:
            quality = max(blobs)
            for i, blob in enumerate(blobs[quality]):
                write(i, quality, blob)
            over = False
    if over:  # nothing fits: the lowest quality (the limits check fails the materialization)
        quality = QUALITIES[-1]
        for i, band in composed(list(range(n))):
            write(i, quality, encode_jpeg(band, quality))
    return [(paths[i], y1 - y0, written[i][1]) for i, (y0, y1) in enumerate(bounds)], quality


class InOrder:
    """Hands bands to ``sink`` in index order, each once: ``on_band`` for :func:`save_jpeg_slices`,
    whose passes start over from the first slice (so a band is seen again, never skipped)."""

    def __init__(self, sink: Callable[[Image.Image], None]):
        self.sink, self.next = sink, 0

    def __call__(self, i: int, band: Image.Image) -> None:
        if i == self.next:
            self.sink(band)
            self.next += 1


@contextmanager
def png_stream(dest: Path, width: int, height: int, level: int = 6) -> Iterator[PngWriter]:
    """A PNG written band by band (:class:`PngWriter`) to a temp beside ``dest``, renamed over it when
    every row is written."""
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        writer = PngWriter(f, width, height, level)
        yield writer
        writer.close()


def save_strip_png(placed: list[Placed], height: int, dest: Path, scale: float = 1.0, width: int = STRIP_WIDTH,
                   band_rows: int = 1024) -> None:
    """The strip at ``scale`` as one PNG, made and written ``band_rows`` rows at a time: never whole."""
    full_w, full_h = round(width * scale), round(height * scale)
    edges = [(y, min(y + band_rows, full_h)) for y in range(0, full_h, band_rows)]
    with png_stream(dest, full_w, full_h) as png:
        for band in bands(placed, edges, scale, width):
            png.write(band)


def thumbnail(placed: list[Placed], dest: Path) -> None:
    """The first panel, cropped to WEBTOON's episode thumbnail."""
    from PIL import ImageOps

    with Image.open(placed[0].path) as im, atomic_path(dest) as tmp:
        ImageOps.fit(im.convert("RGB"), THUMBNAIL).save(tmp, format="JPEG", quality=90)
