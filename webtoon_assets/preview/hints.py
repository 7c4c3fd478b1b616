"""What the offline renderer draws: the hints a request carries for the local provider."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PLAIN_PALETTE = ["#444444", "#aaaaaa"]


class Figure(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    palette: list[str]


class PreviewHints(BaseModel):
    """What the offline renderer draws. Only the local provider reads these (and keys on them)."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["style", "character", "prop", "background", "panel"]
    title: str
    palette: list[str]
    figures: list[Figure] = Field(default_factory=list)
    shot: str | None = None
    caption: str = ""

    @classmethod
    def plain(cls, title: str) -> "PreviewHints":
        """For a request that gave no hints: a grey panel titled with what was asked for."""
        return cls(kind="panel", title=title, palette=PLAIN_PALETTE)
