"""Lettering: dialogue, thoughts, captions and sound effects drawn onto finished panels."""

from webtoon_assets.letter.draw import draw_lettering
from webtoon_assets.letter.layout import Item, Lettering, layout

__all__ = ["Item", "Lettering", "draw_lettering", "layout"]
