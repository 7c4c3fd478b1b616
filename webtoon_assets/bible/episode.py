"""An episode script, parsed: scenes of panels with shot, cast, action and lettering text."""

from __future__ import annotations

from typing import Any, Iterable, Literal

from pydantic import Field

from webtoon_assets.bible.models import Slug, Strict, Take

Shot = Literal[
    "establishing", "wide", "full", "medium", "close-up", "extreme-close-up", "over-shoulder", "pov", "insert"
]
SHOTS: tuple[str, ...] = Shot.__args__  # type: ignore[attr-defined]
Pace = Literal["rapid", "normal", "pause", "scene"]
Width = Literal["full", "inset"]
Camera = Literal["eye", "low", "high", "bird", "worm", "dutch"]
LineKind = Literal["speech", "thought", "whisper", "shout", "off"]
LINE_KINDS: tuple[str, ...] = LineKind.__args__  # type: ignore[attr-defined]


class DialogueLine(Strict):
    speaker: Slug
    kind: LineKind = "speech"
    text: str = Field(min_length=1)


class Panel(Strict):
    id: Slug
    line: int = Field(description="line of the PANEL heading in the script")
    shot: Shot
    characters: list[Slug] = Field(default_factory=list)
    action: str = ""
    dialogue: list[DialogueLine] = Field(default_factory=list)
    captions: list[str] = Field(default_factory=list)
    sfx: list[str] = Field(default_factory=list)
    take: Take = 1
    gutter: int | None = Field(default=None, ge=0, le=2000, description="px after this panel at 800 px width")
    pace: Pace | None = None
    width: Width | None = None
    aspect: str | None = None  # an image_size preset
    camera: Camera | None = None
    props: list[Slug] = Field(default_factory=list, description="props drawn in the panel, by id")
    outfits: dict[Slug, Slug] = Field(default_factory=dict, description="character → outfit, over the scene's")


class Scene(Strict):
    number: int = Field(ge=1)
    location: Slug
    description: str = ""
    outfits: dict[Slug, Slug] = Field(default_factory=dict, description="character → outfit, over the default")
    panels: list[Panel] = Field(min_length=1)


def cast_in_order(panels: Iterable[Any]) -> list[str]:
    """Characters drawn or heard in these panels (anything with ``characters`` and ``dialogue``),
    in order of first appearance."""
    seen: dict[str, None] = {}
    for p in panels:
        for c in [*p.characters, *(d.speaker for d in p.dialogue)]:
            seen.setdefault(c)
    return list(seen)


class ProseScript(Strict):
    """An episode written as prose: a text model (or, offline, a splitter) turns it into panels."""

    id: Slug
    series: Slug
    title: str = Field(min_length=1)
    text: str = Field(min_length=1)
    take: Take = 1
    path: str


class Episode(Strict):
    id: Slug
    series: Slug
    title: str = Field(min_length=1)
    scenes: list[Scene] = Field(min_length=1)

    @property
    def panels(self) -> list[Panel]:
        return [p for s in self.scenes for p in s.panels]

    def characters(self) -> list[str]:
        return cast_in_order(self.panels)

    def locations(self) -> list[str]:
        return list(dict.fromkeys(s.location for s in self.scenes))

    def props(self) -> list[str]:
        return list(dict.fromkeys(p for panel in self.panels for p in panel.props))
