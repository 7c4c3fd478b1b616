"""Reference packing: a panel's references combined into fewer images, so fewer input megapixels
are billed. FLUX.2 on fal bills every reference as at least one megapixel: four 0.8 MP sheets cost
four, the same four side by side in one 1 MP image cost one.

- ``lineup``: the characters' sheets side by side in one image; the setting (props, background,
  style) in another;
- ``board``: everything in one image.

Each pack fits within 1024×1024 px (one megapixel as fal counts it), its members in a grid of equal
cells chosen to keep them as large as possible, each fitted whole (letterboxed on white). A pack is
content-addressed (``<folder>/<sha256>.png``): the same sheets make the same file, so a panel's
request key, and the cache, are stable. Its size follows from its members' sizes alone, so a quote
prices packs before any sheet exists (``planned``)."""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, Sequence

from PIL import Image

from webtoon_assets.files import write_bytes_atomic
from webtoon_assets.gateway import Reference

Packing = Literal["none", "lineup", "board"]
SIDE = 1024  # a pack's longest side: one megapixel of 1024² px as fal counts it
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class Pack:
    name: str  # characters | setting | board
    members: tuple[Reference, ...]
    cols: int
    rows: int
    cell: tuple[int, int]

    @property
    def size(self) -> tuple[int, int]:
        return self.cols * self.cell[0], self.rows * self.cell[1]

    @property
    def role(self) -> str:
        return f"pack:{self.name}({','.join(r.role for r in self.members)})"


def _grid(members: Sequence[Reference]) -> tuple[int, int, tuple[int, int]]:
    """Columns, rows and the cell size that show ``members`` largest within SIDE×SIDE, the cell
    shaped like their average aspect."""
    aspects = [(r.width or SIDE) / (r.height or SIDE) for r in members]
    aspect = math.exp(sum(map(math.log, aspects)) / len(aspects))
    best = None
    for cols in range(1, len(members) + 1):
        rows = math.ceil(len(members) / cols)
        w = min(SIDE / cols, SIDE * aspect / rows)
        h = w / aspect
        if best is None or w * h > best[2][0] * best[2][1] + 1e-6:
            best = (cols, rows, (w, h))
    cols, rows, (w, h) = best  # type: ignore[misc]
    return cols, rows, (max(16, math.floor(w)), max(16, math.floor(h)))


def plan_packs(refs: Sequence[Reference], packing: Packing) -> list[Reference | Pack]:
    """What ``refs`` become: packs (and references left alone: a group of one is not repacked)."""
    if packing == "none" or len(refs) <= 1:
        return list(refs)
    characters = [r for r in refs if r.role.startswith("character:")]
    setting = [r for r in refs if not r.role.startswith("character:")]
    groups = [("board", list(refs))] if packing == "board" else [("characters", characters), ("setting", setting)]
    out: list[Reference | Pack] = []
    for name, members in groups:
        if len(members) == 1:
            out.append(members[0])
        elif members:
            out.append(Pack(name, tuple(members), *_grid(members)))
    return out


def board_size(sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The size of one board packing images of these sizes (what-if pricing: sizes alone)."""
    refs = [Reference(role=f"r{i}", path="", sha256="", width=w, height=h) for i, (w, h) in enumerate(sizes)]
    pack = Pack("board", tuple(refs), *_grid(refs))
    return pack.size


def planned(refs: Sequence[Reference], packing: Packing) -> list[Reference]:
    """The references a packed request would carry, writing nothing: a pack whose members all exist
    is rendered in memory for its content hash (so a quote knows the panel is made); one with a
    member still to be made is planned by its size alone (what a quote prices)."""
    out: list[Reference] = []
    for p in plan_packs(refs, packing):
        if isinstance(p, Reference):
            out.append(p)
        elif all(not m.sha256.startswith("planned:") and m.path and Path(m.path).is_file() for m in p.members):
            out.append(Reference(role=p.role, path="", sha256=_render(p)[1], width=p.size[0], height=p.size[1]))
        else:
            out.append(Reference(role=p.role, path="", sha256=f"planned:{p.role}", width=p.size[0], height=p.size[1]))
    return out


def pack_references(refs: Sequence[Reference], packing: Packing, folder: Path) -> list[Reference]:
    """``refs`` packed as ``packing`` says, each pack written once into ``folder``."""
    out = []
    for p in plan_packs(refs, packing):
        if isinstance(p, Pack):
            data, sha = _render(p)
            path = folder / f"{sha}.png"
            if not path.is_file():
                folder.mkdir(parents=True, exist_ok=True)
                write_bytes_atomic(path, data)
            p = Reference(role=p.role, path=str(path), sha256=sha, width=p.size[0], height=p.size[1])
        out.append(p)
    return out


@lru_cache(maxsize=16)
def _render(pack: Pack) -> tuple[bytes, str]:
    """The pack's PNG and its sha256. Members are keyed by content (sha256), so a cached pack is
    the same image."""
    width, height = pack.size
    cw, ch = pack.cell
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    for i, member in enumerate(pack.members):
        with Image.open(member.path) as im:
            f = min(cw / im.width, ch / im.height)  # whole, as large as its cell allows
            im = im.convert("RGB").resize((max(1, min(cw, round(im.width * f))), max(1, min(ch, round(im.height * f)))),
                                          Image.Resampling.LANCZOS)
            x = (i % pack.cols) * cw + (cw - im.width) // 2
            y = (i // pack.cols) * ch + (ch - im.height) // 2
            canvas.paste(im, (x, y))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=False, compress_level=6)
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()
