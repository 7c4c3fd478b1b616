"""The strip streamed: slices composed one at a time (never the whole strip), the JPEG quality
chosen without encoding everything again, and the whole strip as a PNG written band by band."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageChops, ImageDraw

from webtoon_assets.compose import canvas
from webtoon_assets.png import PngWriter


def art(path: Path, size: tuple[int, int], seed: int, noise: float = 0.0) -> Path:
    """A panel: shapes on a gradient (and, with ``noise``, grain that JPEG cannot squeeze)."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.zeros((h, w, 3), dtype=np.float64)
    base[..., 0] = np.linspace(40, 220, w)[None, :]
    base[..., 1] = np.linspace(200, 30, h)[:, None]
    base[..., 2] = 90 + 60 * seed % 120
    if noise:
        base += rng.normal(0, noise, base.shape)
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        d.ellipse((x0, y0, x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))),
                  fill=tuple(int(v) for v in rng.integers(0, 255, 3)), outline="black", width=3)
    im.save(path)
    return path


def episode(tmp_path: Path, sizes: list[tuple[int, int]], widths: list[str] | None = None,
            gutters: list[int] | None = None, noise: float = 0.0, distinct: int | None = None):
    """Laid-out panels of the given pixel sizes (``distinct`` files drawn, reused in turn)."""
    files = [art(tmp_path / f"art{i}.png", sizes[i], seed=i, noise=noise) for i in range(distinct or len(sizes))]
    panels = [canvas.PanelIn(f"p{i:02d}", files[i % len(files)], (gutters or [100])[i % len(gutters or [100])],
                             (widths or ["full"])[i % len(widths or ["full"])], ["center", "left", "right"][i % 3])
              for i in range(len(sizes))]
    return canvas.lay_out(panels)


def test_bands_are_the_naive_strip_cut_into_bands(tmp_path):
    placed, height = episode(tmp_path, [(512, 512), (384, 512), (512, 288), (300, 900), (512, 384)],
                             widths=["full", "full", "inset", "full", "inset"], gutters=[0, 40, 100])
    for scale in (1.0, 512 / placed[2].width):  # 800 px, and the inset panel's own resolution
        whole = canvas.render(placed, height, scale=scale)
        edges = [(y, min(y + 333, whole.height)) for y in range(0, whole.height, 333)]  # bands cut through panels
        for (y0, y1), band in zip(edges, canvas.bands(placed, edges, scale=scale)):
            assert band.size == (whole.width, y1 - y0)
            assert ImageChops.difference(band, whole.crop((0, y0, whole.width, y1))).getbbox() is None, (scale, y0)


class Allocations:
    """The tallest image Pillow makes (new canvases, opened, resized, converted, copied, cropped)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.tallest = 0
        self.encoded = 0
        new, open_ = Image.new, Image.open
        monkeypatch.setattr(Image, "new", lambda *a, **k: self.seen(new(*a, **k)))
        monkeypatch.setattr(Image, "open", lambda *a, **k: self.seen(open_(*a, **k)))
        for method in ("resize", "convert", "copy", "crop"):
            original = getattr(Image.Image, method)
            monkeypatch.setattr(Image.Image, method, self.wrap(original))
        encode = canvas.encode_jpeg

        def counted(image, quality):
            self.encoded += 1
            return encode(image, quality)

        monkeypatch.setattr(canvas, "encode_jpeg", counted)

    def seen(self, image: Image.Image) -> Image.Image:
        self.tallest = max(self.tallest, image.height)
        return image

    def wrap(self, method):
        return lambda im, *a, **k: self.seen(method(im, *a, **k))


def test_a_long_strip_of_tall_panels_is_never_whole_in_memory(tmp_path, monkeypatch):
    placed, height = episode(tmp_path, [(450, 680)] * 40, gutters=[60] * 39 + [10], distinct=3)  # 800x1209 placed
    cuts, through = canvas.cut_points(placed, height)
    assert height > 40 * 1209 and through == 0
    spy = Allocations(monkeypatch)
    slices, quality = canvas.save_jpeg_slices(placed, height, cuts, tmp_path / "webtoon")
    assert spy.tallest <= canvas.MAX_SLICE_HEIGHT and height > 35 * canvas.MAX_SLICE_HEIGHT  # a slice, never the strip
    assert spy.encoded == len(slices) == len(cuts) + 1  # each slice encoded once: nothing was over
    assert quality == canvas.QUALITIES[0]
    assert sum(h for _, h, _ in slices) == height
    for path, h, size in slices:
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.size == (canvas.STRIP_WIDTH, h) and h <= canvas.MAX_SLICE_HEIGHT
        assert path.stat().st_size == size <= canvas.MAX_SLICE_BYTES


def test_slices_are_the_same_bytes_every_time(tmp_path):
    placed, height = episode(tmp_path, [(512, 512), (384, 512), (512, 288)] * 3, widths=["full", "inset"])
    cuts, _ = canvas.cut_points(placed, height)
    first, q1 = canvas.save_jpeg_slices(placed, height, cuts, tmp_path / "a")
    second, q2 = canvas.save_jpeg_slices(placed, height, cuts, tmp_path / "b")
    assert q1 == q2 and [p.read_bytes() for p, _, _ in first] == [p.read_bytes() for p, _, _ in second]
    # the same bytes as the naive way: the whole strip, cropped, encoded at that quality
    whole = canvas.render(placed, height)
    for (path, _, _), (y0, y1) in zip(first, canvas.slice_bounds(cuts, height)):
        assert path.read_bytes() == canvas.encode_jpeg(whole.crop((0, y0, whole.width, y1)), q1)


def test_a_heavy_episode_gets_a_lower_quality_and_fits_webtoon_canvas(tmp_path, monkeypatch):
    # grain in every panel: about 0.7 MB a slice at q92, over 20 MB for the episode
    placed, height = episode(tmp_path, [(800, 1240)] * 34, gutters=[40], noise=70, distinct=2)
    cuts, _ = canvas.cut_points(placed, height)
    spy = Allocations(monkeypatch)
    slices, quality = canvas.save_jpeg_slices(placed, height, cuts, tmp_path / "webtoon")
    assert quality < canvas.QUALITIES[0] and spy.tallest <= canvas.MAX_SLICE_HEIGHT
    sizes = [p.stat().st_size for p, _, _ in slices]
    assert sizes == [b for _, _, b in slices] and max(sizes) <= canvas.MAX_SLICE_BYTES
    assert sum(sizes) <= canvas.MAX_EPISODE_BYTES
    assert sorted(p.name for p in (tmp_path / "webtoon").iterdir()) == [p.name for p, _, _ in slices]


def reference_quality(placed, height, cuts) -> int:
    """Today's rule, the slow way: every slice at each quality until all fit."""
    whole = canvas.render(placed, height)
    crops = [whole.crop((0, y0, whole.width, y1)) for y0, y1 in canvas.slice_bounds(cuts, height)]
    for q in canvas.QUALITIES:
        sizes = [len(canvas.encode_jpeg(c, q)) for c in crops]
        if max(sizes) <= canvas.MAX_SLICE_BYTES and sum(sizes) <= canvas.MAX_EPISODE_BYTES:
            return q
    return canvas.QUALITIES[-1]


@pytest.mark.parametrize("limit", ["slice", "episode", "nothing fits"])
def test_the_quality_is_the_highest_that_fits_either_limit(tmp_path, monkeypatch, limit):
    placed, height = episode(tmp_path, [(512, 512), (384, 512), (512, 288), (512, 700)] * 2, noise=25,
                             gutters=[100, 300])
    cuts, _ = canvas.cut_points(placed, height)
    at_best = [len(canvas.encode_jpeg(b, canvas.QUALITIES[0]))
               for b in canvas.bands(placed, canvas.slice_bounds(cuts, height))]
    heaviest = max(range(len(at_best)), key=at_best.__getitem__)
    assert heaviest > 0  # so that slices before it are encoded again at the lower quality
    if limit == "slice":  # the heaviest slice needs a lower quality: so do the slices before it
        monkeypatch.setattr(canvas, "MAX_SLICE_BYTES", int(at_best[heaviest] * 0.8))
    if limit == "episode":
        monkeypatch.setattr(canvas, "MAX_EPISODE_BYTES", int(sum(at_best) * 0.55))
    if limit == "nothing fits":
        monkeypatch.setattr(canvas, "MAX_EPISODE_BYTES", 1000)
    slices, quality = canvas.save_jpeg_slices(placed, height, cuts, tmp_path / "webtoon")
    assert quality == reference_quality(placed, height, cuts) < canvas.QUALITIES[0]
    whole = canvas.render(placed, height)
    for (path, _, size), (y0, y1) in zip(slices, canvas.slice_bounds(cuts, height)):  # one quality for all
        assert path.read_bytes() == canvas.encode_jpeg(whole.crop((0, y0, whole.width, y1)), quality)
    if limit == "nothing fits":
        assert quality == canvas.QUALITIES[-1]
    else:
        assert max(s for *_, s in slices) <= canvas.MAX_SLICE_BYTES
        assert sum(s for *_, s in slices) <= canvas.MAX_EPISODE_BYTES


def test_the_streamed_png_is_the_naive_strip(tmp_path):
    placed, height = episode(tmp_path, [(512, 512), (384, 512), (512, 288), (300, 900)],
                             widths=["full", "inset"], gutters=[30, 120])
    scale = 512 / placed[1].width  # the inset's own resolution: the full-width panels scaled up
    canvas.save_strip_png(placed, height, tmp_path / "full.png", scale=scale, band_rows=97)
    with Image.open(tmp_path / "full.png") as im:
        assert im.format == "PNG" and im.mode == "RGB"
        assert ImageChops.difference(im, canvas.render(placed, height, scale=scale)).getbbox() is None
    # the 800 px strip from the slices' own bands, while they are encoded
    cuts, _ = canvas.cut_points(placed, height)
    with canvas.png_stream(tmp_path / "strip.png", canvas.STRIP_WIDTH, height) as png:
        canvas.save_jpeg_slices(placed, height, cuts, tmp_path / "webtoon", on_band=canvas.InOrder(png.write))
    with Image.open(tmp_path / "strip.png") as im:
        assert ImageChops.difference(im, canvas.render(placed, height)).getbbox() is None
    assert [p.name for p in tmp_path.glob(".*")] == []  # no temp left


def test_the_png_writer_refuses_a_short_or_wrong_image(tmp_path):
    writer = PngWriter(io.BytesIO(), 10, 4)
    with pytest.raises(ValueError, match="12 px wide"):
        writer.write(Image.new("RGB", (12, 2)))
    writer.write(Image.new("RGB", (10, 3)))
    with pytest.raises(ValueError, match="rows 5 of a PNG 4"):
        writer.write(Image.new("RGB", (10, 2)))
    with pytest.raises(ValueError, match="3 rows written"):
        writer.close()
    with pytest.raises(ZeroDivisionError), canvas.png_stream(tmp_path / "x.png", 10, 4) as png:
        png.write(Image.new("RGB", (10, 4)))
        1 / 0
    assert list(tmp_path.iterdir()) == []  # a failed write leaves neither the file nor its temp
