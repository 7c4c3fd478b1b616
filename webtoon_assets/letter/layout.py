"""Where each balloon, caption and sound effect goes on a panel.

Reading order is top-left to bottom-right: captions first, then the dialogue in script order, then
sound effects. Each item is placed as high as it fits, near its speaker (characters stand left to
right in the order of the PANEL line), never above the item before it and, when beside it, only to
its right; no two items overlap and all stay inside the panel. When text does not fit, the font
shrinks down to a legible minimum; past that, the panel gets a warning that names it.
"""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import ImageFont

from webtoon_assets.manifests import PanelPlan

FONTS = Path(__file__).with_name("fonts")
FONT_FILES = {"speech": "ComicNeue-Bold.otf", "thought": "ComicNeue-BoldItalic.otf", "whisper": "ComicNeue-Italic.otf",
              "shout": "ComicNeue-Bold.otf", "off": "ComicNeue-Bold.otf", "caption": "ComicNeue-Italic.otf",
              "sfx": "ComicNeue-Bold.otf"}
# Share of the panel width a block of text may take, by kind.
MAX_WIDTH = {"caption": 0.62, "sfx": 0.5}
DEFAULT_MAX_WIDTH = 0.42
# Where a speaker's head is, as a share of the panel height, by shot (for the tail to point at).
HEAD_Y = {"establishing": 0.72, "wide": 0.62, "full": 0.3, "medium": 0.38, "over-shoulder": 0.4, "pov": 0.45,
          "close-up": 0.5, "extreme-close-up": 0.5, "insert": 0.5}
HEAD_IN_BOX = 0.12  # a detected character's head: this far down their box
# Detected boxes by character: x0, y0, x1, y1 as shares of the panel (the panels manifest's).
Boxes = Mapping[str, Sequence[float]]
COVERAGE_WARNING = 0.45  # balloons covering more of the art than this get a warning


@dataclass
class Item:
    kind: str  # speech | thought | whisper | shout | off | caption | sfx
    text: str
    speaker: str | None
    order: int
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # the balloon (or caption, or effect) on the panel
    lines: list[str] = field(default_factory=list)
    font_size: int = 0
    tail: tuple[int, int] | None = None  # where the tail points

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Lettering:
    panel: str
    width: int
    height: int
    items: list[Item]
    warnings: list[str]


_fonts = threading.local()  # FreeType faces are not to be shared between threads: one cache per thread


def font(kind: str, size: int) -> ImageFont.FreeTypeFont:
    cache = _fonts.__dict__.setdefault("by_kind_size", {})
    if (f := cache.get((kind, size))) is None:
        f = cache[(kind, size)] = ImageFont.truetype(str(FONTS / FONT_FILES[kind]), size)
    return f


def wrap(text: str, kind: str, size: int, max_px: float) -> list[str]:
    f = font(kind, size)
    avg = max(1.0, f.getlength("abcdefghijklmnopqrstuvwxyz") / 26)
    width = max(8, int(max_px / avg))
    while width > 4:
        lines = textwrap.wrap(text, width=width) or [text]
        if max(f.getlength(line) for line in lines) <= max_px:
            return lines
        width -= 1
    return textwrap.wrap(text, width=4) or [text]


def block_size(lines: list[str], kind: str, size: int) -> tuple[int, int]:
    f = font(kind, size)
    line_h = int(size * 1.18)
    return int(max(f.getlength(line) for line in lines)), line_h * len(lines)


def padding(kind: str, size: int) -> tuple[int, int]:
    """Room between the text and the balloon's edge; bursts and clouds need more."""
    if kind in ("shout", "thought"):
        return int(size * 1.1), int(size * 0.9)
    if kind == "sfx":
        return int(size * 0.2), int(size * 0.2)
    if kind == "caption":
        return int(size * 0.5), int(size * 0.35)
    return int(size * 0.75), int(size * 0.55)


def items_of(plan: PanelPlan) -> list[Item]:
    out = [Item("caption", c, None, 0) for c in plan.captions]
    out += [Item(d.kind, d.text, d.speaker, 0) for d in plan.dialogue]
    out += [Item("sfx", s, None, 0) for s in plan.sfx]
    for i, item in enumerate(out):
        item.order = i
    return out


def speaker_x(plan: PanelPlan, speaker: str | None, width: int, boxes: Boxes | None = None) -> float:
    """Where the speaker stands: the middle of their detected box, else of their place in the PANEL line."""
    if boxes and speaker in boxes:
        return width * (boxes[speaker][0] + boxes[speaker][2]) / 2
    if speaker in plan.characters:
        i = plan.characters.index(speaker)
        return width * (i + 0.5) / len(plan.characters)
    return width * 0.85  # off panel: from the right-hand side


def overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def head_y(plan: PanelPlan, speaker: str | None, height: int, boxes: Boxes | None = None) -> int:
    """Where the speaker's head is: near the top of their detected box, else where the shot puts heads."""
    if boxes and speaker in boxes:
        y0, y1 = boxes[speaker][1], boxes[speaker][3]
        return int(height * (y0 + HEAD_IN_BOX * (y1 - y0)))
    return int(height * HEAD_Y.get(plan.shot, 0.45))


def _place(plan: PanelPlan, width: int, height: int, base: int, boxes: Boxes | None = None
           ) -> tuple[list[Item], bool]:
    """One layout attempt at a font size; False if something did not fit in reading order."""
    margin, gap = int(width * 0.025), int(width * 0.012)
    items = items_of(plan)
    placed: list[Item] = []
    fitted = True
    for item in items:
        size = int(base * 1.7) if item.kind == "sfx" else base
        max_px = width * MAX_WIDTH.get(item.kind, DEFAULT_MAX_WIDTH)
        item.lines, item.font_size = wrap(item.text, item.kind, size, max_px), size
        tw, th = block_size(item.lines, item.kind, size)
        px, py = padding(item.kind, size)
        w, h = min(tw + 2 * px, width - 2 * margin), th + 2 * py
        if item.kind == "caption":
            xs = [margin]
        elif item.kind == "sfx":
            xs = [width - margin - w, margin, (width - w) // 2]
        else:
            pref = int(speaker_x(plan, item.speaker, width, boxes) - w / 2)
            xs = [pref, pref - w // 3, pref + w // 3, margin, width - margin - w]
        xs = [min(max(x, margin), width - margin - w) for x in xs]
        prev = placed[-1].box if placed else None
        top = max(margin, prev[1] if prev else margin)
        if item.kind == "sfx":  # effects sit in the art, below the talk where there is room
            top = max(top, int(height * 0.5)) if height * 0.5 + h < height - margin else top
        spot = None
        for y in range(top, height - margin - h + 1, 4):
            for x in xs:
                box = (x, y, x + w, y + h)
                after = prev is None or y >= prev[3] + gap or x >= prev[2] + gap  # below, or to the right
                if after and not any(overlaps(box, p.box, gap) for p in placed):
                    spot = box
                    break
            if spot:
                break
        if spot is None:
            fitted = False
            # out of reading order, but still inside and clear of the others if at all possible
            for y in range(margin, height - margin - h + 1, 4):
                for x in range(margin, width - margin - w + 1, 8):
                    if not any(overlaps((x, y, x + w, y + h), p.box, gap) for p in placed):
                        spot = (x, y, x + w, y + h)
                        break
                if spot:
                    break
        if spot is None:  # no clear room left: letter it anyway (never drop words), flagged by a warning
            y = max(0, height - margin - h)
            spot = (xs[0], y, xs[0] + w, min(height, y + h))
        item.box = spot
        if item.kind not in ("caption", "sfx"):
            head = head_y(plan, item.speaker, height, boxes)
            sx = int(speaker_x(plan, item.speaker, width, boxes))
            item.tail = (width - 1, spot[3] + (height - spot[3]) // 3) if item.kind == "off" and \
                item.speaker not in plan.characters else (sx, max(head, spot[3] + int(h * 0.35)))
        placed.append(item)
    return placed, fitted and len(placed) == len(items)


def layout(plan: PanelPlan, width: int, height: int, boxes: Boxes | None = None) -> Lettering:
    """``boxes``: the characters' detected boxes (the panels manifest's): balloons sit over and tails
    point at where each speaker was found; without one, at their place in the PANEL line."""
    base = max(16, round(width * 0.034))
    smallest = max(13, round(width * 0.022))
    size = base
    while True:
        placed, ok = _place(plan, width, height, size, boxes)
        if ok or size <= smallest:
            break
        size = max(smallest, int(size * 0.9))
    warnings = []
    expected = len(items_of(plan))
    if not ok:
        clash = any(overlaps(a.box, b.box, 0) for i, a in enumerate(placed) for b in placed[i + 1:])
        warnings.append(f"panel {plan.id}: too much text for the panel ({expected} items, "
                        f"{sum(len(i.text) for i in items_of(plan))} characters): "
                        + ("balloons overlap" if clash else "placed out of reading order")
                        + "; split the panel or cut words")
    covered = sum((i.box[2] - i.box[0]) * (i.box[3] - i.box[1]) for i in placed if i.kind != "sfx")
    if covered > COVERAGE_WARNING * width * height:
        warnings.append(f"panel {plan.id}: balloons cover {covered / (width * height):.0%} of the art")
    if size < base and not warnings:
        warnings.append(f"panel {plan.id}: lettering shrunk to {size}px to fit")
    return Lettering(plan.id, width, height, placed, warnings)
