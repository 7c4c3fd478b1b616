"""Stack panels into one vertical strip at the webtoon reading width, with gutters for pacing.

Panels are opened one at a time and pasted, so memory holds the strip canvas and one panel."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

STRIP_WIDTH = 800  # WEBTOON Canvas upload width


def compose_strip(panels: list[tuple[Path, int]], dest: Path, width: int = STRIP_WIDTH,
                  background: str = "white") -> tuple[int, int]:
    """``panels``: (image path, gutter px below it at ``width``). Writes a PNG; returns its size."""
    heights = []
    for path, _ in panels:
        with Image.open(path) as im:  # reads the header only
            heights.append(round(im.height * width / im.width))
    total = sum(heights) + sum(g for _, g in panels)
    canvas = Image.new("RGB", (width, max(total, 1)), background)
    y = 0
    for (path, gutter), h in zip(panels, heights):
        with Image.open(path) as im:
            canvas.paste(im.convert("RGB").resize((width, h), Image.Resampling.LANCZOS), (0, y))
        y += h + gutter
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    canvas.save(tmp, format="PNG", compress_level=6)
    os.replace(tmp, dest)
    return canvas.size
