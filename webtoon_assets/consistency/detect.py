"""Where each character stands in a panel: a box per character, found or assumed.

Two detectors, one answer (``Detection``):
- ``panel-line`` (the default, free): characters stand left to right in the order of the PANEL
  line, each in an equal vertical band, 10-90 % of the height. An assumption, and said to be one.
- ``vision-judge``: the series' vision model (``trial.judge``, on fal) is shown the panel and asked
  for each character's box. It is a gateway text request like any other: keyed by the panel's own
  image, so cached; priced per token; a ledger row per attempt. A character the model does not find,
  or whose box is not a box, keeps its panel-line band, and the detection says which.

Offline, the preview renderer stands in for the model at its list price, answering the panel-line
boxes (it drew the characters there), and the detection says so: an offline season still quotes
what detection would cost, and nothing pretends to have been detected.

No package ships a detector suited to stylised characters with its weights inside (OpenCV's Haar
cascades are trained on photographs of faces; YOLO-family and anime detectors download weights at
run time), so there is no offline detector beyond the fallback.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from webtoon_assets.gateway import Attribution, GenerationRequest, Reference
from webtoon_assets.gateway.store import sha256_file

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as shares of the panel's width and height

PANEL_LINE = "panel-line"
OFFLINE_NOTE = "panel-line (offline: the preview renderer stands in for the vision judge)"


def panel_line_boxes(characters: list[str]) -> dict[str, Box]:
    """The PANEL line's assumption: equal bands, left to right, in the line's order."""
    n = len(characters)
    return {cid: (round(i / n, 4), 0.1, round((i + 1) / n, 4), 0.9) for i, cid in enumerate(characters)}


@dataclass(frozen=True)
class Detection:
    boxes: dict[str, Box]
    source: str  # "vision-judge", "panel-line", or the offline note
    not_found: list[str] = field(default_factory=list)  # asked for, not found: their panel-line band stands in

    @property
    def detected(self) -> bool:
        return self.source == "vision-judge"

    @property
    def found(self) -> list[str]:
        """The characters whose box was found in the image (not assumed)."""
        return [c for c in self.boxes if c not in self.not_found] if self.detected else []

    def describe(self) -> str:
        if self.not_found:
            return f"{self.source}; panel-line band for {', '.join(self.not_found)} (not found)"
        return self.source


class Detector(Protocol):
    name: str

    def detect(self, panel: Path, characters: list[str], label: str) -> Detection: ...


class PanelLineDetector:
    name = PANEL_LINE

    def detect(self, panel: Path, characters: list[str], label: str = "") -> Detection:
        return Detection(panel_line_boxes(characters), PANEL_LINE)


def _box(value: Any) -> Box | None:
    """A box the model gave, as shares; None if it is not one (0 <= x0 < x1 <= 1, likewise y)."""
    if isinstance(value, dict):
        value = [value.get(k) for k in ("x0", "y0", "x1", "y1")]
    try:
        x0, y0, x1, y1 = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if max(x0, y0, x1, y1) > 1.0 and max(x0, y0, x1, y1) <= 1000.0:  # a 0-1000 grid, as Gemini's boxes come
        x0, y0, x1, y1 = x0 / 1000, y0 / 1000, x1 / 1000, y1 / 1000
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        return None
    return (round(x0, 4), round(y0, 4), round(x1, 4), round(y1, 4))


def parse_boxes(text: str, characters: list[str]) -> tuple[dict[str, Box], list[str]]:
    """(boxes found, characters not found) from the model's answer; ValueError if it is no answer."""
    m = re.search(r"\{.*\}", text, re.S)
    try:
        data = json.loads(m.group(0)) if m else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("boxes"), dict):
        raise ValueError(f"expected JSON {{\"boxes\": {{character: [x0, y0, x1, y1]}}}}, got {text[:120]!r}")
    found = {cid: b for cid in characters if (b := _box(data["boxes"].get(cid))) is not None}
    return found, [cid for cid in characters if cid not in found]


class VisionDetector:
    """The vision judge asked for boxes: one priced, cached gateway request per panel image."""

    name = "vision-judge"
    PROMPT = ("Find each listed character in the image. Answer JSON only: {{\"boxes\": {{<id>: [x0, y0, x1, y1] or "
              "null}}}}, the bounding boxes as fractions (0-1) of the image's width and height, x0,y0 the top left; "
              "null for a character not in the image. Characters (id: who): {who}.")

    def __init__(self, gateway: Any, endpoint: str, arguments: dict, who: Attribution, names: dict[str, str]):
        """``gateway``: anything with ``generate_text`` (the step's session counts the cost);
        ``names``: character id -> a short description the model can recognise them by."""
        self.gateway, self.endpoint, self.arguments, self.who, self.names = gateway, endpoint, arguments, who, names

    def request(self, panel: Path, characters: list[str], label: str) -> GenerationRequest:
        from PIL import Image

        with Image.open(panel) as im:
            width, height = im.size
        who = "; ".join(f"{cid}: {self.names.get(cid, cid)}" for cid in characters)
        assumed = {cid: list(b) for cid, b in panel_line_boxes(characters).items()}
        return GenerationRequest(
            endpoint=self.endpoint,
            arguments={"prompt": self.PROMPT.format(who=who), "system_prompt": "You are a precise image annotator.",
                       **self.arguments},
            references=[Reference(role="panel", path=str(panel), sha256=sha256_file(panel), width=width,
                                  height=height)],
            attribution=self.who.model_copy(update={"item": f"{label}~detect"}),
            stand_in=json.dumps({"boxes": assumed}))

    def detect(self, panel: Path, characters: list[str], label: str) -> Detection:
        if not characters:
            return Detection({}, self.name)
        result = self.gateway.generate_text(self.request(panel, characters, label))
        if result.row.provider == "local":
            return Detection(panel_line_boxes(characters), OFFLINE_NOTE)
        try:
            found, missing = parse_boxes(result.text, characters)
        except ValueError as e:
            raise ValueError(f"the vision judge ({self.endpoint}) was asked for boxes: {e}") from None
        assumed = panel_line_boxes(characters)
        return Detection({cid: found.get(cid, assumed[cid]) for cid in characters}, self.name, missing)


def make_detector(kind: str, gateway: Any = None, endpoint: str = "", arguments: dict | None = None,
                  who: Attribution | None = None, names: dict[str, str] | None = None) -> Detector:
    if kind == PANEL_LINE:
        return PanelLineDetector()
    if kind == "vision-judge":
        if gateway is None or who is None:
            raise ValueError("the vision-judge detector needs the gateway")
        return VisionDetector(gateway, endpoint, arguments or {}, who, names or {})
    raise ValueError(f"unknown detector {kind!r}; expected panel-line or vision-judge")
