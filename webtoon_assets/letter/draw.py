"""Drawing the lettering: speech balloons with tails, thought clouds, whisper (dashed), shout
(burst), off-panel speech (tail to the edge), captions (boxes) and sound effects."""

from __future__ import annotations

import math
import random

from PIL import Image, ImageDraw

from webtoon_assets.letter.layout import Item, Lettering, font

INK, PAPER, CAPTION = "#111111", "#ffffff", "#fff3b0"
SFX_FILL = "#f2a541"


def _text(draw: ImageDraw.ImageDraw, item: Item, fill: str = INK) -> None:
    f = font(item.kind, item.font_size)
    line_h = int(item.font_size * 1.18)
    x0, y0, x1, y1 = item.box
    top = (y0 + y1) / 2 - line_h * len(item.lines) / 2
    for i, line in enumerate(item.lines):
        draw.text(((x0 + x1) / 2, top + i * line_h + line_h / 2), line, font=f, fill=fill, anchor="mm")


def _tail(draw: ImageDraw.ImageDraw, item: Item, stroke: int) -> None:
    if item.tail is None:
        return
    x0, y0, x1, y1 = item.box
    tx, ty = item.tail
    # the base sits on the balloon's lower edge, leaning toward the speaker
    bx = min(max(tx, x0 + (x1 - x0) * 0.25), x0 + (x1 - x0) * 0.75)
    half = max(6, (x1 - x0) * 0.07)
    base_y = y1 - (y1 - y0) * 0.2
    length = min(math.hypot(tx - bx, ty - base_y), (y1 - y0) * 1.1 + 20)
    ang = math.atan2(ty - base_y, tx - bx)
    tip = (bx + length * math.cos(ang), base_y + length * math.sin(ang))
    draw.polygon([(bx - half, base_y), (bx + half, base_y), tip], fill=PAPER, outline=INK, width=stroke)


def _dashed_rect(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], stroke: int) -> None:
    x0, y0, x1, y1 = box
    dash = max(6, stroke * 4)
    for a, b in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        n = max(1, int(math.hypot(b[0] - a[0], b[1] - a[1]) // (2 * dash)))
        for i in range(n):
            t0, t1 = (2 * i) / (2 * n), (2 * i + 1) / (2 * n)
            draw.line([(a[0] + (b[0] - a[0]) * t0, a[1] + (b[1] - a[1]) * t0),
                       (a[0] + (b[0] - a[0]) * t1, a[1] + (b[1] - a[1]) * t1)], fill=INK, width=stroke)


def _burst(box: tuple[int, int, int, int], spikes: int = 14) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = box
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    pts = []
    for i in range(spikes * 2):
        a = math.pi * i / spikes
        k = 1.0 if i % 2 == 0 else 0.78
        pts.append((cx + rx * k * math.cos(a), cy + ry * k * math.sin(a)))
    return pts


def _cloud(draw: ImageDraw.ImageDraw, item: Item, stroke: int) -> None:
    x0, y0, x1, y1 = item.box
    rng = random.Random(item.text)
    r = max(8, int(min(x1 - x0, y1 - y0) * 0.22))
    inner = (x0 + r * 0.6, y0 + r * 0.6, x1 - r * 0.6, y1 - r * 0.6)
    puffs = []
    for t in range(0, 100, 9):  # puffs around the rim
        f = t / 100
        for (px, py) in ((inner[0] + (inner[2] - inner[0]) * f, inner[1]), (inner[0] + (inner[2] - inner[0]) * f, inner[3])):
            puffs.append((px, py, r * rng.uniform(0.8, 1.0)))
    for t in range(0, 100, 20):
        f = t / 100
        for px in (inner[0], inner[2]):
            puffs.append((px, inner[1] + (inner[3] - inner[1]) * f, r * rng.uniform(0.8, 1.0)))
    for px, py, pr in puffs:
        draw.ellipse((px - pr, py - pr, px + pr, py + pr), fill=PAPER, outline=INK, width=stroke)
    for px, py, pr in puffs:  # clear the inner outlines
        draw.ellipse((px - pr + stroke, py - pr + stroke, px + pr - stroke, py + pr - stroke), fill=PAPER)
    draw.rectangle(inner, fill=PAPER)
    if item.tail:  # a thought trails off in bubbles toward the thinker
        tx, ty = item.tail
        sx, sy = (x0 + x1) / 2, y1
        for i, k in enumerate((0.35, 0.6, 0.8)):
            bx, by = sx + (tx - sx) * k, sy + (ty - sy) * k
            br = max(4, r * (0.45 - 0.12 * i))
            draw.ellipse((bx - br, by - br, bx + br, by + br), fill=PAPER, outline=INK, width=stroke)


def _sfx(image: Image.Image, item: Item) -> None:
    f = font("sfx", item.font_size)
    x0, y0, x1, y1 = item.box
    layer = Image.new("RGBA", (x1 - x0, y1 - y0), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    line_h = int(item.font_size * 1.18)
    top = (y1 - y0) / 2 - line_h * len(item.lines) / 2
    for i, line in enumerate(item.lines):
        d.text(((x1 - x0) / 2, top + i * line_h + line_h / 2), line, font=f, fill=SFX_FILL, anchor="mm",
               stroke_width=max(2, item.font_size // 10), stroke_fill=INK)
    image.paste(layer, (x0, y0), layer)


def draw_lettering(image: Image.Image, lettering: Lettering) -> Image.Image:
    """Letter ``image`` (a copy is returned; the clean panel is never changed)."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    stroke = max(2, out.width // 320)
    for item in lettering.items:
        radius = int(min(item.box[2] - item.box[0], item.box[3] - item.box[1]) * 0.45)
        if item.kind == "caption":
            draw.rectangle(item.box, fill=CAPTION, outline=INK, width=stroke)
            _text(draw, item)
        elif item.kind == "sfx":
            _sfx(out, item)
        elif item.kind == "thought":
            _cloud(draw, item, stroke)
            _text(draw, item)
        elif item.kind == "shout":
            _tail(draw, item, stroke)
            draw.polygon(_burst(item.box), fill=PAPER, outline=INK, width=stroke + 1)
            _text(draw, item)
        else:  # speech, whisper, off
            _tail(draw, item, stroke)
            draw.rounded_rectangle(item.box, radius=radius, fill=PAPER,
                                   outline=None if item.kind == "whisper" else INK, width=stroke)
            if item.kind == "whisper":
                _dashed_rect(draw, item.box, stroke)
            _text(draw, item)
    return out
