"""Static HTML, no scripts or network: the slices in a centred 800 px column, like the app."""

from __future__ import annotations

import html
import os
from pathlib import Path

from webtoon_assets.files import write_text_atomic

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
 body {{ margin: 0; background: #1b1b1f; color: #eee; font: 15px/1.4 system-ui, sans-serif; }}
 header, nav {{ max-width: 800px; margin: 0 auto; padding: 14px 12px; }}
 header h1 {{ font-size: 18px; margin: 0; }} header p {{ margin: 4px 0 0; color: #aaa; }}
 main {{ max-width: 800px; margin: 0 auto; background: #fff; }}
 main img {{ display: block; width: 100%; height: auto; }}
 nav {{ display: flex; justify-content: space-between; }} a {{ color: #f2a541; }}
 ul.season {{ list-style: none; padding: 0; max-width: 800px; margin: 0 auto; }}
 ul.season li {{ display: flex; gap: 12px; align-items: center; padding: 8px 12px; border-bottom: 1px solid #333; }}
</style></head>
<body>{body}</body></html>
"""


def _rel(target: Path, start: Path) -> str:
    return html.escape(os.path.relpath(target, start.parent).replace(os.sep, "/"))


def write_episode(dest: Path, series_title: str, episode: str, title: str, slices: list[Path],
                  prev_page: Path | None, next_page: Path | None, index: Path) -> Path:
    nav = [f'<a href="{_rel(prev_page, dest)}">&larr; previous</a>' if prev_page else "<span></span>",
           f'<a href="{_rel(index, dest)}">season</a>',
           f'<a href="{_rel(next_page, dest)}">next &rarr;</a>' if next_page else "<span></span>"]
    imgs = "\n".join(f'<img src="{_rel(s, dest)}" alt="{html.escape(episode)} part {i}">'
                     for i, s in enumerate(slices, start=1))
    body = (f"<header><h1>{html.escape(series_title)}</h1><p>{html.escape(episode)}: {html.escape(title)}</p></header>"
            f"<nav>{''.join(nav)}</nav><main>\n{imgs}\n</main><nav>{''.join(nav)}</nav>")
    return write_text_atomic(dest, PAGE.format(title=html.escape(f"{series_title}: {title}"), body=body))


def write_index(dest: Path, series_title: str, episodes: list[tuple[str, str, Path, Path]]) -> Path:
    """``episodes``: (id, title, reader page, thumbnail)."""
    rows = "\n".join(f'<li><img src="{_rel(thumb, dest)}" width="80" alt=""><a href="{_rel(page, dest)}">'
                     f"{html.escape(eid)}: {html.escape(title)}</a></li>" for eid, title, page, thumb in episodes)
    body = f"<header><h1>{html.escape(series_title)}</h1><p>{len(episodes)} episode(s)</p></header>" \
           f'<ul class="season">{rows}</ul>'
    return write_text_atomic(dest, PAGE.format(title=html.escape(series_title), body=body))
