"""What each asset hands downstream: small JSON manifests pointing at image files."""

from __future__ import annotations

from pydantic import BaseModel, Field

from webtoon_assets.bible.episode import DialogueLine


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
    characters: list[str]
    action: str
    dialogue: list[DialogueLine]
    captions: list[str]
    sfx: list[str]
    take: int
    gutter: int  # px below this panel at 800 px width
    prompt: str


class Storyboard(BaseModel):
    series: str
    episode: str
    title: str
    panels: list[PanelPlan]


class Strip(BaseModel):
    series: str
    episode: str
    path: str
    width: int
    height: int
    panels: int
