"""The series bible as pydantic models: the edge where a writer's YAML becomes typed data."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from webtoon_assets.sizes import IMAGE_SIZE_PRESETS

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
ENDPOINT_RE = re.compile(r"^[a-z0-9][a-z0-9-]*(/[a-z0-9][a-z0-9._-]*)+$")


def check_slug(value: str) -> str:
    if not SLUG_RE.match(value):
        raise ValueError(
            "expected a slug: lowercase letters, digits, '_' or '-', starting with a letter or digit, "
            "at most 64 characters (no paths, no '..')"
        )
    return value


def check_colour(value: str) -> str:
    if not re.match(r"^#[0-9a-fA-F]{6}$", value):
        raise ValueError("expected a colour as '#rrggbb'")
    return value.lower()


def check_endpoint(value: str) -> str:
    if not ENDPOINT_RE.match(value) or ".." in value:
        raise ValueError("expected an endpoint id like 'fal-ai/flux-2/flash'")
    return value


Slug = Annotated[str, AfterValidator(check_slug)]
Colour = Annotated[str, AfterValidator(check_colour)]
Endpoint = Annotated[str, AfterValidator(check_endpoint)]
Take = Annotated[int, Field(ge=1, description="bump to ask for a new version; old ones are kept")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CustomSize(Strict):
    width: int = Field(ge=64, le=4096)
    height: int = Field(ge=64, le=4096)


ImageSize = Literal[tuple(IMAGE_SIZE_PRESETS)] | CustomSize  # type: ignore[valid-type]


class Style(Strict):
    description: str = Field(min_length=1)
    palette: list[Colour] = Field(min_length=2)
    line: str = Field(min_length=1)
    rendering: str = Field(min_length=1)
    take: Take = 1


SINGLE_OUTFIT = "default"  # the id of the one outfit a character's ``outfit:`` describes


class Character(Strict):
    name: str = Field(min_length=1)
    look: str = Field(min_length=1)
    # One outfit (``outfit:``, its id 'default'), or several by id (``outfits:``) with ``default_outfit:``
    # (else the first). A script picks one per scene or panel; each one used gets its own sheet.
    outfit: str | None = Field(default=None, min_length=1)
    outfits: dict[Slug, Annotated[str, Field(min_length=1)]] = Field(default_factory=dict)
    default_outfit: Slug | None = None
    palette: list[Colour] = Field(min_length=1)
    personality: str = ""
    take: Take = 1

    @model_validator(mode="after")
    def _wardrobe(self) -> "Character":
        if self.outfit is not None and self.outfits:
            raise ValueError("expected either outfit: (one outfit) or outfits: (id: description, several), not both; "
                             "to add outfits, move outfit's text into outfits under an id")
        if self.outfit is None and not self.outfits:
            raise ValueError("expected outfit: (what the character wears) or outfits: (id: description, several)")
        if self.default_outfit is not None and self.default_outfit not in self.wardrobe():
            raise ValueError(f"default_outfit: unknown outfit {self.default_outfit!r}; expected one of "
                             f"{list(self.wardrobe())}")
        return self

    def wardrobe(self) -> dict[str, str]:
        """Outfit id → description, in the order written."""
        return {SINGLE_OUTFIT: self.outfit} if self.outfit is not None else dict(self.outfits)

    @property
    def default_outfit_id(self) -> str:
        return self.default_outfit or next(iter(self.wardrobe()))

    def outfit_description(self, outfit: str | None = None) -> str:
        """What the character wears in ``outfit`` (None: the default outfit)."""
        return self.wardrobe()[outfit or self.default_outfit_id]


class Prop(Strict):
    """An object that recurs (a letter, a bell, a sword): one reference sheet, reused like a character's."""

    name: str = Field(min_length=1)
    look: str = Field(min_length=1)
    palette: list[Colour] = Field(min_length=1)
    take: Take = 1


class Location(Strict):
    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    palette: list[Colour] = Field(default_factory=list)
    take: Take = 1


class FamilyModel(Strict):
    """Which endpoint makes one asset family, at what size, with which extra arguments."""

    endpoint: Endpoint
    image_size: ImageSize = "square_hd"
    max_references: int = Field(default=4, ge=0, le=10)
    # Fewer, larger references bill fewer input megapixels: "lineup" sends the characters side by side
    # in one image and the setting (background, style, props) in another; "board" sends all in one.
    pack_references: Literal["none", "lineup", "board"] = "none"
    arguments: dict[str, Any] = Field(default_factory=dict)

    @field_validator("arguments")
    @classmethod
    def _no_reserved(cls, v: dict[str, Any]) -> dict[str, Any]:
        reserved = {"prompt", "image_size", "seed", "image_urls"} & set(v)
        if reserved:
            raise ValueError(f"expected endpoint extras only; {sorted(reserved)} are set by the pipeline")
        return v


def _family(endpoint: str, size: str) -> Any:
    return Field(default_factory=lambda: FamilyModel(endpoint=endpoint, image_size=size))


class TextModel(Strict):
    """The text model that turns a prose episode into panels (priced per token)."""

    endpoint: Endpoint
    arguments: dict[str, Any] = Field(default_factory=dict)

    @field_validator("arguments")
    @classmethod
    def _no_reserved(cls, v: dict[str, Any]) -> dict[str, Any]:
        reserved = {"prompt", "system_prompt", "image_urls"} & set(v)
        if reserved:
            raise ValueError(f"expected endpoint extras only; {sorted(reserved)} are set by the pipeline")
        return v


class LoraTraining(Strict):
    """Character LoRAs (series.yaml ``models.loras``; the cost study's last branch): one LoRA per
    character trained on fal's FLUX.2 trainer from its sheet and accepted panels, paid once and
    amortised over the season; panels are then made on ``endpoint`` with the characters' LoRAs."""

    train: bool = False
    trainer: Endpoint = "fal-ai/flux-2-trainer"
    steps: int = Field(1000, ge=100, le=10000)
    learning_rate: float = Field(0.00005, gt=0, le=0.01)
    endpoint: Endpoint = Field("fal-ai/flux-2/lora/edit", description="the LoRA-capable panel endpoint")
    scale: float = Field(1.0, ge=0, le=4)
    trigger_prefix: str = Field("wbt", pattern=r"^[a-z][a-z0-9]*$",
                                description="each character's trigger word is <prefix>_<character id>")
    max_panels: int = Field(20, ge=0, le=200, description="accepted panels per character in its training set")

    def trigger(self, character: str) -> str:
        return f"{self.trigger_prefix}_{character}"


class Models(Strict):
    # Defaults follow the cost study's cheapest FLUX.2 option; panels use the multi-reference /edit.
    style_sheet: FamilyModel = _family("fal-ai/flux-2/flash", "landscape_4_3")
    character_sheets: FamilyModel = _family("fal-ai/flux-2/flash", "landscape_4_3")
    prop_sheets: FamilyModel = _family("fal-ai/flux-2/flash", "landscape_4_3")
    backgrounds: FamilyModel = _family("fal-ai/flux-2/flash", "portrait_4_3")
    # Panels take their size from the storyboard (the shot's aspect, or the script's [aspect=...]);
    # an image_size written here instead fixes one size for every panel without [aspect=...].
    panels: FamilyModel = _family("fal-ai/flux-2/flash/edit", "portrait_4_3")
    storyboard: TextModel = Field(default_factory=lambda: TextModel(
        endpoint="fal-ai/any-llm", arguments={"model": "google/gemini-3-flash"}))
    loras: LoraTraining = Field(default_factory=LoraTraining)

    def panel_size_override(self) -> str | CustomSize | None:
        return self.panels.image_size if "image_size" in self.panels.model_fields_set else None


class BudgetLimits(Strict):
    """The series.yaml ``budget:`` block: what an episode may cost. The spend itself is guarded by
    ``webtoon_assets.gateway.budget.Budgets``."""

    per_episode_usd: Decimal | None = Field(default=None, ge=0)
    target_per_panel_usd: Decimal = Field(default=Decimal("0.05"), gt=0)


class Thresholds(Strict):
    """The cost study's verdicts and decision tree, as consistency scores 0-100."""

    production: float = Field(90, ge=0, le=100, description=">= this: production ready")
    acceptable: float = Field(80, ge=0, le=100, description=">= this: acceptable, proceed")
    lora: float = Field(70, ge=0, le=100, description=">= this: needs LoRA training; below: reject")
    pick: float = Field(85, ge=0, le=100, description="the cheapest model at >= this is recommended")
    premium_pick: float = Field(90, ge=0, le=100, description="a model over the target $/panel needs >= this")


class Judge(TextModel):
    """The vision model that scores consistency; its prompts and images are set by the pipeline."""

    endpoint: Endpoint = "fal-ai/any-llm/vision"
    arguments: dict[str, Any] = Field(default_factory=lambda: {"model": "google/gemini-3-flash"})


class Trial(Strict):
    """The model trial: a base reference of one character and N variations with it, per model."""

    character: Slug | None = None  # default: the series' first character
    # The cost study's validation plan: FLUX.2 flash and dev on fal, klein 9B and pro on BFL's API.
    candidates: list[Endpoint] = Field(default_factory=lambda: [
        "fal-ai/flux-2/flash/edit", "fal-ai/flux-2/edit", "bfl/flux-2-klein-9b", "bfl/flux-2-pro"], min_length=1)
    budget_usd: Decimal = Field(Decimal(10), ge=0, description="what the whole trial may spend, every candidate "
                                                               "and retry together (the study's $10)")
    variations: int = Field(5, ge=1, le=20)
    scorer: Literal["palette-structure", "vision-judge", "embedding"] = "palette-structure"
    judge: Judge = Field(default_factory=Judge)
    thresholds: Thresholds = Field(default_factory=Thresholds)


ScorerKind = Literal["palette-structure", "vision-judge", "embedding"]


class ConsistencyGate(Strict):
    """The consistency gate (series.yaml ``consistency:``): each panel with characters is scored
    against their sheets as it lands; under ``threshold`` it is made again with a new seed, up to
    ``max_retakes`` times, within the episode's budget, and the best take is kept. Off by default.
    ``gate: true`` runs on a model's images only (offline previews are not measured); ``always``
    runs offline too, paying (counting) list-price retakes on stand-in scores."""

    gate: bool | Literal["always"] = False
    threshold: float | None = Field(None, ge=0, le=100, description="default trial.thresholds.acceptable")
    max_retakes: int = Field(2, ge=0, le=10)
    # default: the check's (trial.scorer, with the paid vision judge replaced by palette-structure)
    scorer: ScorerKind | None = None
    # Where each character stands in a panel, for the consistency crops and the lettering's tails:
    # the PANEL line's order (free), or boxes found by the vision judge (trial.judge; priced, cached).
    detector: Literal["panel-line", "vision-judge"] = "panel-line"

    def threshold_for(self, thresholds: Thresholds) -> float:
        return thresholds.acceptable if self.threshold is None else self.threshold


class Series(Strict):
    id: Slug
    title: str = Field(min_length=1)
    planned_episodes: int = Field(ge=1)
    style: Style
    characters: dict[Slug, Character] = Field(min_length=1)
    locations: dict[Slug, Location] = Field(min_length=1)
    props: dict[Slug, Prop] = Field(default_factory=dict)
    models: Models = Field(default_factory=Models)
    budget: BudgetLimits = Field(default_factory=BudgetLimits)
    trial: Trial = Field(default_factory=Trial)
    consistency: ConsistencyGate = Field(default_factory=ConsistencyGate)

    @model_validator(mode="after")
    def _trial_character(self) -> "Series":
        if self.trial.character is not None and self.trial.character not in self.characters:
            raise ValueError(f"trial.character: unknown character {self.trial.character!r}; expected one of "
                             f"{sorted(self.characters)}")
        return self

    @model_validator(mode="after")
    def _unique_speaker_names(self) -> "Series":
        seen: dict[str, str] = {}
        for cid, c in self.characters.items():
            for alias in {cid.upper(), c.name.upper()}:
                if alias in seen and seen[alias] != cid:
                    raise ValueError(f"characters {seen[alias]} and {cid} share the speaker name {alias!r}")
                seen[alias] = cid
        return self

    def prop_id(self, token: str) -> str | None:
        """A prop named in a script, by id or by name (any case)."""
        t = token.strip().lower()
        return t if t in self.props else next((pid for pid, p in self.props.items() if p.name.lower() == t), None)

    def speaker_ids(self) -> dict[str, str]:
        """Names a script may use for a character (upper case) → character id."""
        out: dict[str, str] = {}
        for cid, c in self.characters.items():
            out[cid.upper()] = cid
            out[cid.upper().replace("_", " ")] = cid
            out[c.name.upper()] = cid
        return out
