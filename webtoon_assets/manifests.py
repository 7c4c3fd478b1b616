"""What each asset hands downstream: small JSON manifests (the storyboard, image sets, the strip)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from webtoon_assets.bible.episode import DialogueLine, cast_in_order


class ImageItem(BaseModel):
    item: str  # character id, location id, panel id, or "style"
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


class Storyboard(BaseModel):
    series: str
    episode: str
    title: str
    panels: list[PanelPlan]
    source: str = "script"  # script, or the model (or offline splitter) that made it from prose

    def characters(self) -> list[str]:
        return cast_in_order(self.panels)


class LetteredPanel(BaseModel):
    item: str
    path: str  # the lettered panel
    clean_path: str  # the panel as generated, never changed
    width: int
    height: int
    lettering: list[dict]  # each balloon, caption and effect: kind, text, speaker, box, tail, font size
    warnings: list[str]


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
