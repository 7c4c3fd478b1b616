"""Deterministic preview images: palette from the style, characters as labelled figures in their
colours, framing by shot, the location as a backdrop, and a PREVIEW mark. Good enough to check a
storyboard and a strip; never mistaken for a real generation."""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from webtoon_assets.preview.hints import PLAIN_PALETTE, Figure, PreviewHints

# How large a figure is (in canvas heights) and where its feet stand, by shot.
SHOT_FRAMING: dict[str, tuple[float, float]] = {
    "establishing": (0.22, 0.92),
    "wide": (0.38, 0.92),
    "full": (0.72, 0.95),
    "medium": (1.05, 1.2),
    "over-shoulder": (1.1, 1.3),
    "pov": (1.0, 1.3),
    "close-up": (2.2, 2.5),
    "extreme-close-up": (3.4, 3.9),
    "insert": (0.5, 0.9),
}
SKIN = "#f1c9a5"


@lru_cache(maxsize=16)
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _gradient(width: int, height: int, top: str, bottom: str) -> Image.Image:
    # A 1×2 image stretched with bilinear resampling is a fast vertical gradient.
    strip = Image.new("RGB", (1, 2))
    strip.putpixel((0, 0), _rgb(top))
    strip.putpixel((0, 1), _rgb(bottom))
    return strip.resize((width, height), Image.Resampling.BILINEAR)


def _label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, size: int, anchor: str = "mm") -> None:
    draw.text(xy, text, fill="white", font=font(size), anchor=anchor, stroke_width=max(1, size // 12),
              stroke_fill="black")


def _figure(draw: ImageDraw.ImageDraw, fig: Figure, cx: float, feet: float, height: float,
            max_width: float | None = None) -> None:
    """A simple standing figure: body in the first colour, accent scarf, hair in the last."""
    body, accent, hair = (fig.palette + fig.palette[-1:] * 3)[:3] if len(fig.palette) >= 3 else (
        fig.palette[0], fig.palette[-1], fig.palette[0])
    head_r = height * 0.11
    head_cy = feet - height + head_r
    w = min(height * 0.34, max_width or height)
    draw.rounded_rectangle((cx - w / 2, head_cy + head_r * 1.1, cx + w / 2, feet - height * 0.28),
                           radius=w * 0.3, fill=body, outline="black", width=max(2, int(height / 120)))
    for side in (-1, 1):  # legs
        draw.rectangle((cx + side * w * 0.28 - w * 0.12, feet - height * 0.3, cx + side * w * 0.28 + w * 0.12, feet),
                       fill="#2b2b2b")
    draw.rectangle((cx - w * 0.45, head_cy + head_r * 1.05, cx + w * 0.45, head_cy + head_r * 1.5), fill=accent)
    draw.ellipse((cx - head_r, head_cy - head_r, cx + head_r, head_cy + head_r), fill=SKIN, outline="black",
                 width=max(2, int(height / 120)))
    draw.chord((cx - head_r * 1.05, head_cy - head_r * 1.1, cx + head_r * 1.05, head_cy + head_r * 0.6), 180, 360,
               fill=hair)
    eye = head_r * 0.12
    for side in (-1, 1):
        draw.ellipse((cx + side * head_r * 0.4 - eye, head_cy - eye, cx + side * head_r * 0.4 + eye, head_cy + eye),
                     fill="black")
    _label(draw, (cx, min(feet - height * 0.55, draw.im.size[1] - 30)), fig.name, max(14, int(height * 0.07)))


@lru_cache(maxsize=8)
def _fitted_plate(path: str, version: int, width: int, height: int) -> Image.Image:
    """A background plate fitted to a panel's size: a scene's panels share it, so it is fitted once
    (per file version; a few plates of a few MB each are kept)."""
    with Image.open(path) as im:
        return ImageOps.fit(im.convert("RGB"), (width, height))


def _backdrop(plate: Path | str | None, hints: PreviewHints, width: int, height: int) -> Image.Image:
    if plate is not None:
        return _fitted_plate(str(plate), Path(plate).stat().st_mtime_ns, width, height).copy()
    palette = hints.palette or ["#333333", "#999999"]
    return _gradient(width, height, palette[0], palette[-1])


def _scenery(draw: ImageDraw.ImageDraw, rng: random.Random, palette: list[str], width: int, height: int) -> None:
    """Deterministic shapes standing in for a location: buildings, a horizon, lights."""
    horizon = height * rng.uniform(0.55, 0.7)
    x = 0.0
    while x < width:
        w = width * rng.uniform(0.08, 0.2)
        top = horizon - height * rng.uniform(0.1, 0.45)
        draw.rectangle((x, top, x + w, height), fill=rng.choice(palette), outline="black", width=2)
        for _ in range(rng.randint(1, 4)):
            lx, ly = x + rng.uniform(0.15, 0.85) * w, top + rng.uniform(0.1, 0.6) * (height - top)
            draw.ellipse((lx - 6, ly - 8, lx + 6, ly + 8), fill="#f7e1a0")
        x += w
    draw.rectangle((0, horizon + height * 0.25, width, height), fill=palette[0])


def render_preview(hints: PreviewHints, width: int, height: int, seed: int | None = 0,
                   backdrop: Path | str | None = None) -> Image.Image:
    """The preview ``hints`` describe, ``width`` × ``height``. ``seed`` places what is random;
    ``backdrop``: an image to draw on (a panel's background plate) instead of drawn scenery."""
    rng = random.Random(seed)
    palette = hints.palette or PLAIN_PALETTE
    image = _backdrop(backdrop, hints, width, height)
    draw = ImageDraw.Draw(image)
    title_size = max(16, width // 28)

    if hints.kind == "style":
        sw = width / len(palette)
        for i, c in enumerate(palette):
            draw.rectangle((i * sw, height * 0.78, (i + 1) * sw, height), fill=c, outline="black", width=3)
        for i in range(6):  # line-weight samples
            y = height * (0.2 + i * 0.08)
            draw.line((width * 0.08, y, width * 0.55, y + rng.uniform(-20, 20)), fill="black", width=2 + i * 2)
        draw.ellipse((width * 0.62, height * 0.15, width * 0.92, height * 0.65), fill=palette[-1], outline="black",
                     width=6)
    elif hints.kind == "background":
        _scenery(draw, rng, palette, width, height)
    elif hints.kind == "character":
        n = 3  # turnaround: front, three-quarter, side
        for i in range(n):
            _figure(draw, hints.figures[0], width * (i + 0.5) / n, height * 0.93, height * 0.78)
    elif hints.kind == "prop":
        n = 3  # the object from the front, three-quarter and side: a labelled shape in its colours
        fig = hints.figures[0]
        for i in range(n):
            cx, w = width * (i + 0.5) / n, width / n * (0.6 - 0.12 * i)
            draw.rounded_rectangle((cx - w / 2, height * 0.3, cx + w / 2, height * 0.7), radius=w * 0.2,
                                   fill=fig.palette[0], outline="black", width=4)
            draw.ellipse((cx - w / 5, height * 0.42, cx + w / 5, height * 0.58), fill=fig.palette[-1], outline="black",
                         width=2)
        _label(draw, (width / 2, height * 0.2), fig.name, max(14, height // 16))
    else:  # panel
        if backdrop is None:
            _scenery(draw, rng, palette, width, height)
        scale, feet = SHOT_FRAMING.get(hints.shot or "medium", (1.0, 1.2))
        figures = hints.figures
        for i, fig in enumerate(figures):
            cx = width * (i + 0.5) / len(figures) + rng.uniform(-0.04, 0.04) * width
            _figure(draw, fig, cx, height * feet, height * scale, max_width=width * 0.85 / len(figures))
        if hints.shot:
            _label(draw, (12, height - 12), hints.shot.upper(), max(14, width // 40), anchor="ld")

    # A solid band at the foot (lettering goes at the top), so a plate's own title never shows through.
    band = title_size * (3.6 if hints.caption else 2.2)
    draw.rectangle((0, height - band, width, height), fill=palette[0])
    _label(draw, (width / 2, height - band + title_size * 0.3), hints.title, title_size, anchor="mt")
    if hints.caption:
        _label(draw, (width / 2, height - band + title_size * 1.7), hints.caption[:90], max(12, title_size * 2 // 3),
               anchor="mt")
    _label(draw, (width - 12, height - 12), "PREVIEW", max(14, width // 30), anchor="rd")
    return image
