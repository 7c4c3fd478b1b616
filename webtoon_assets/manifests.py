"""What each asset hands downstream: small JSON manifests (the storyboard, image sets, the strip)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from webtoon_assets.bible.episode import DialogueLine, cast_in_order


def sheet_id(character: str, outfit: str | None = None) -> str:
    """A character sheet's item: the character's id in their default outfit, ``mira@raincoat`` in another."""
    return character if outfit is None else f"{character}@{outfit}"


class ImageItem(BaseModel):
    item: str  # character sheet (sheet_id), prop, location or panel id, or "style"
    path: str  # readable copy under output/
    store_path: str
    key: str
    sha256: str
    status: str  # generated | cached
    endpoint: str
    provider: str
    width: int
    height: int
    references: list[str] = Field(default_factory=list)
    gate: PanelGate | None = None  # a panel under the consistency gate: its takes and the one kept
    # A panel's characters: where each stands (x0, y0, x1, y1 as shares), and how that was found
    # (series.yaml consistency.detector: "vision-judge", or the PANEL line's order). None: not a panel.
    boxes: dict[str, list[float]] | None = None
    boxes_source: str | None = None
    boxes_detected: list[str] = Field(default_factory=list)  # the characters whose box a detector found


class TakeRecord(BaseModel):
    take: int  # 0: the panel as first asked; n: its n-th retake
    seed: int | None
    score: float  # its weakest character's consistency, 0-100
    scores: dict[str, float]  # per character
    status: str  # generated | cached
    key: str


class PanelGate(BaseModel):
    """The consistency gate's record of one panel (series.yaml ``consistency``): every take tried and
    the one published. ``passed``: the kept take is at or over the threshold."""

    threshold: float
    take: int  # the take kept (published as the panel)
    seed: int | None
    score: float
    passed: bool
    takes: list[TakeRecord]
    stopped: str | None = None  # why retaking stopped short: a budget refusal, a failed retake


class ImageSet(BaseModel):
    series: str
    episode: str
    asset: str
    items: list[ImageItem]

    def by_item(self) -> dict[str, ImageItem]:
        return {i.item: i for i in self.items}


class PanelPlan(BaseModel):
    id: str
    order: int  # reading order, 1-based
    scene: int
    location: str
    shot: str
    camera: str
    characters: list[str]  # left to right in the frame
    action: str
    dialogue: list[DialogueLine]
    captions: list[str]
    sfx: list[str]
    take: int
    pace: str  # rapid | normal | pause | scene
    gutter: int  # px below this panel at 800 px width
    width: str  # full | inset
    align: str  # center, or left/right for an inset
    aspect: str | dict[str, int]  # the image_size asked of the model
    prompt: str
    prompt_parts: dict[str, str]  # where each part of the prompt came from
    props: list[str] = Field(default_factory=list)  # prop ids drawn in the panel (their sheets are references)
    outfits: dict[str, str] = Field(default_factory=dict)  # character → outfit, for those not in their default

    def sheet(self, character: str) -> str:
        """The item of the character sheet this panel draws ``character`` from."""
        return sheet_id(character, self.outfits.get(character))


class Storyboard(BaseModel):
    series: str
    episode: str
    title: str
    panels: list[PanelPlan]
    source: str = "script"  # script, or the model (or offline splitter) that made it from prose

    def characters(self) -> list[str]:
        return cast_in_order(self.panels)

    def sheets(self) -> list[tuple[str, str | None]]:
        """(character, outfit or None for the default) of every sheet the episode needs, in order of first
        appearance: each outfit a character is drawn in, and the default for one who is only heard.
        Characters come in ``characters()``'s order (with one outfit each: the same list)."""
        drawn = {c for p in self.panels for c in p.characters}
        seen: dict[tuple[str, str | None], None] = {}
        for p in self.panels:
            for c in p.characters:
                seen.setdefault((c, p.outfits.get(c)))
            for d in p.dialogue:
                if d.speaker not in drawn:
                    seen.setdefault((d.speaker, None))
        order = {c: i for i, c in enumerate(self.characters())}
        return sorted(seen, key=lambda sheet: order[sheet[0]])  # stable: outfits in order of first appearance

    def props(self) -> list[str]:
        return list(dict.fromkeys(prop for p in self.panels for prop in p.props))


class LetteredPanel(BaseModel):
    item: str
    path: str  # the lettered panel
    clean_path: str  # the panel as generated, never changed
    width: int
    height: int
    lettering: list[dict]  # each balloon, caption and effect: kind, text, speaker, box, tail, font size
    warnings: list[str]
    tails_from: str = "panel-line"  # where the tails point: the panel's detected boxes, or the PANEL line


class LetteredSet(BaseModel):
    series: str
    episode: str
    items: list[LetteredPanel]

    def by_item(self) -> dict[str, LetteredPanel]:
        return {i.item: i for i in self.items}


class Slice(BaseModel):
    path: str
    width: int
    height: int
    bytes: int


class Strip(BaseModel):
    series: str
    episode: str
    path: str | None = None  # the whole strip at 800 px (PNG), when asked for (``full_strips``)
    full_path: str | None = None  # the same at the panels' own resolution
    width: int
    height: int
    panels: int
    slices: list[Slice]
    total_bytes: int
    jpeg_quality: int
    cuts_through_panels: int
    thumbnail: str
    reader: str
