"""Character LoRAs (series.yaml ``models.loras``): the training set, its zip, the trainer request,
the series' record of trained LoRAs, and panels made with them.

A character's training set is its sheets (every outfit made) and its accepted panels: panels of
made episodes that show it, as their manifests under ``output/`` record them (a panel under the
consistency gate counts only if its kept take passed). The images go into a deterministic zip
(sorted by content hash, fixed names and times), stored content-addressed under
``<store>/training/``, so the trainer request's key is a function of the images' content, the steps
and the learning rate.

A LoRA is paid once: the first episode that needs it trains it, and the series' record
(``output/<series>/loras.json``) keeps the request it was trained by, so every later episode asks for
the very same request (a cache hit at $0) instead of training again on a grown set. Retraining is
deliberate: delete the character's entry from the record."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from webtoon_assets.bible import Series
from webtoon_assets.files import write_text_atomic
from webtoon_assets.gateway import Attribution, GenerationRequest, Lora, Reference
from webtoon_assets.gateway.store import sha256_file
from webtoon_assets.manifests import ImageItem, ImageSet, PanelPlan, Storyboard

ZIP_TIME = (2020, 1, 1, 0, 0, 0)


class TrainedLora(BaseModel):
    """One character's LoRA as the series records it."""

    character: str
    trigger: str
    key: str  # the trainer request's store key
    path: str  # the weights in the store
    sha256: str
    trainer: str
    steps: int
    learning_rate: float
    training_data: Reference  # the zip it was trained on (content-addressed)
    images: list[str] = Field(default_factory=list)  # the training images' sha256, in zip order
    episode: str  # the episode whose run trained it (bears its cost, amortised over the season)
    provider: str
    stand_in: bool = False  # offline: a placeholder file, not trained weights
    list_usd: str = "0"


class LoraRecord(BaseModel):
    series: str
    loras: dict[str, TrainedLora] = Field(default_factory=dict)


def record_path(output_root: Path) -> Path:
    """``output/<series>/loras.json`` (``output_root`` is the series' output folder)."""
    return output_root / "loras.json"


def load_record(output_root: Path, series_id: str) -> LoraRecord:
    path = record_path(output_root)
    try:
        return LoraRecord.model_validate_json(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValidationError, ValueError):
        return LoraRecord(series=series_id)


def save_record(output_root: Path, record: LoraRecord) -> None:
    write_text_atomic(record_path(output_root), record.model_dump_json(indent=1))


def _manifest(path: Path, model: type[BaseModel]) -> BaseModel | None:
    try:
        return model.model_validate_json(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValidationError, ValueError):
        return None


def training_images(output_root: Path, character: str, sheets: list[ImageItem], max_panels: int) -> list[ImageItem]:
    """The character's sheets, then its accepted panels from every made episode's manifests (in
    episode order, at most ``max_panels``), each image once by content."""
    images = [s for s in sheets if s.item == character or s.item.startswith(f"{character}@")]
    panels: list[ImageItem] = []
    for episode in sorted(p for p in output_root.iterdir() if p.is_dir()) if output_root.is_dir() else []:
        board = _manifest(episode / "storyboard.json", Storyboard)
        made = _manifest(episode / "panels.json", ImageSet)
        if board is None or made is None:
            continue
        showing = {p.id for p in board.panels if character in p.characters}
        panels += [i for i in made.items if i.item in showing and (i.gate is None or i.gate.passed)
                   and Path(i.store_path).is_file()]
    seen: set[str] = set()
    out = []
    for i in [*images, *panels[:max_panels]]:
        if i.sha256 not in seen:
            seen.add(i.sha256)
            out.append(i)
    return out


def training_zip(folder: Path, character: str, images: list[ImageItem]) -> Reference:
    """The images as one deterministic zip, stored under ``folder`` by its content hash."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for n, i in enumerate(images):
            info = zipfile.ZipInfo(f"{n:03d}_{i.sha256[:16]}.png", date_time=ZIP_TIME)
            info.external_attr = 0o644 << 16
            z.writestr(info, Path(i.store_path).read_bytes())
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    path = folder / digest[:2] / f"{digest}.zip"
    if not path.is_file() or sha256_file(path) != digest:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".zip.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return Reference(role=f"training:{character}", path=str(path), sha256=digest)


def lora_request(series: Series, episode: str, character: str, data: Reference) -> GenerationRequest:
    """The trainer request of one character: keyed by the zip's content, steps and learning rate."""
    cfg = series.models.loras
    return GenerationRequest(
        endpoint=cfg.trainer,
        arguments={"steps": cfg.steps, "learning_rate": cfg.learning_rate,
                   "default_caption": cfg.trigger(character)},
        training_data=data,
        attribution=Attribution(series=series.id, episode=episode, asset="character_loras", item=character,
                                reusable=True),
    )


def recorded_request(series: Series, episode: str, lora: TrainedLora) -> GenerationRequest:
    """The request a recorded LoRA was trained by (a later episode's cache hit, never a new training)."""
    return GenerationRequest(
        endpoint=lora.trainer,
        arguments={"steps": lora.steps, "learning_rate": lora.learning_rate, "default_caption": lora.trigger},
        training_data=lora.training_data,
        attribution=Attribution(series=series.id, episode=episode, asset="character_loras", item=lora.character,
                                reusable=True),
    )


def with_loras(series: Series, request: GenerationRequest, plan: PanelPlan,
               loras: dict[str, TrainedLora]) -> GenerationRequest:
    """A panel request of a LoRA series: on the LoRA endpoint, with its characters' LoRAs (their
    content hashes keyed) and trigger words. Unchanged when the series does not train LoRAs or
    none of the panel's characters has one."""
    cfg = series.models.loras
    mine = [loras[c] for c in plan.characters if c in loras]
    if not cfg.train or not mine:
        return request
    triggers = ", ".join(lo.trigger for lo in mine)
    return request.model_copy(update={
        "endpoint": cfg.endpoint,
        "arguments": {**request.arguments, "prompt": f"{triggers}. {request.arguments['prompt']}"},
        "loras": [Lora(role=f"lora:{lo.character}", path=lo.path, sha256=lo.sha256, scale=cfg.scale) for lo in mine],
    })


def lora_summary(record: LoraRecord) -> str:
    return json.dumps({c: {"sha256": lo.sha256[:12], "stand_in": lo.stand_in, "episode": lo.episode}
                       for c, lo in record.loras.items()})


class LoraSet(BaseModel):
    """The ``character_loras`` manifest of one episode: the LoRAs its panels use."""

    series: str
    episode: str
    loras: list[TrainedLora] = Field(default_factory=list)

    def by_character(self) -> dict[str, TrainedLora]:
        return {lo.character: lo for lo in self.loras}


def episode_loras(episode_output: Path, series: Series) -> dict[str, TrainedLora]:
    """The LoRAs an episode's panels use: its ``character_loras`` manifest (none unless the series
    trains LoRAs); a LoRA whose weights are gone from the store is left out."""
    if not series.models.loras.train:
        return {}
    found = _manifest(episode_output / "character_loras.json", LoraSet)
    return {c: lo for c, lo in found.by_character().items() if Path(lo.path).is_file()} if found else {}
