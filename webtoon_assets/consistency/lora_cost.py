"""What the decision tree's "train LoRA" branch would cost this series: one LoRA per character on
the trainer (steps x $/step, from the price book), paid once, and what that adds per panel
amortised over the planned season."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from webtoon_assets.bible.models import Series
from webtoon_assets.pricing import PriceBook, quote


@dataclass(frozen=True)
class LoraCost:
    trainer: str
    characters: int
    steps: int
    per_character_usd: Decimal
    planned_episodes: int
    panels_per_episode: float | None  # None: no scripts yet, so no per-panel figure

    @property
    def total_usd(self) -> Decimal:
        return self.per_character_usd * self.characters

    @property
    def per_panel_usd(self) -> Decimal | None:
        if not self.panels_per_episode:
            return None
        return self.total_usd / (Decimal(self.planned_episodes) * Decimal(str(self.panels_per_episode)))

    def line(self) -> str:
        per_step = self.per_character_usd / self.steps
        panel = (f", ${self.per_panel_usd:.4f} per panel amortised over {self.planned_episodes} planned episode(s) "
                 f"of ~{self.panels_per_episode:g} panels" if self.per_panel_usd is not None
                 else f", ${self.total_usd / self.planned_episodes:.2f} per episode over {self.planned_episodes} "
                      "planned (no scripts yet to count panels)")
        return (f"training would cost {self.characters} character(s) x {self.steps} steps x ${per_step}/step "
                f"({self.trainer}) = ${self.total_usd:.2f}, paid once{panel}; opt in with models.loras.train")


def lora_cost(series: Series, book: PriceBook, panels_per_episode: float | None = None) -> LoraCost:
    cfg = series.models.loras
    per_character = quote(cfg.trainer, {"steps": cfg.steps}, book=book).usd
    return LoraCost(cfg.trainer, len(series.characters), cfg.steps, per_character, series.planned_episodes,
                    panels_per_episode)
