"""The cost study's verdicts and decision tree (seeds/000, "Post-Test Decision Tree"), as data in,
a recommendation out. Thresholds come from series.yaml (trial.thresholds)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from webtoon_assets.bible.models import Thresholds


NOT_MEASURED = "not measured (preview stand-ins)"


def verdict(consistency: float, t: Thresholds, measured: bool = True) -> str:
    if not measured:  # offline: the scores compare the preview renderer's stand-ins, not a model's drawing
        return NOT_MEASURED
    if consistency >= t.production:
        return "production ready"
    if consistency >= t.acceptable:
        return "acceptable"
    if consistency >= t.lora:
        return "needs LoRA"
    return "reject"


@dataclass(frozen=True)
class Candidate:
    endpoint: str
    model: str
    cost_per_panel_usd: Decimal
    consistency: float
    measured: bool = True  # False: made offline by the preview renderer, so its score means nothing
    platform: str = "fal"  # who sells it (the price book's platform): the tree runs across all of them


@dataclass(frozen=True)
class Recommendation:
    action: str  # use | train LoRA | none (nothing measured: offline previews)
    endpoint: str | None
    model: str | None
    reason: str
    platform: str | None = None


def recommend(candidates: list[Candidate], t: Thresholds, target_per_panel: Decimal) -> Recommendation:
    """Cheapest first: a model within the $/panel target needs ``pick`` (85); a premium one, over the
    target, needs ``premium_pick`` (90). None passing: train a LoRA. Only measured candidates count: offline (preview
    stand-ins) there is nothing to recommend from, so the answer is none, not a LoRA."""
    offline = [c for c in candidates if not c.measured]
    candidates = [c for c in candidates if c.measured]
    if offline and not candidates:
        return Recommendation("none", None, None,
                              f"offline previews are not measured: {len(offline)} candidate(s) tried on the preview "
                              "renderer, whose stand-ins show no model's drawing; run the trial with the platforms' "
                              "keys set (FAL_KEY, BFL_API_KEY, ...) to score the models' own images")
    for c in sorted(candidates, key=lambda c: (c.cost_per_panel_usd, c.endpoint)):
        premium = c.cost_per_panel_usd > target_per_panel
        bar = t.premium_pick if premium else t.pick
        if c.consistency >= bar:
            kind = "premium model (over the target)" if premium else "cheapest model"
            return Recommendation("use", c.endpoint, c.model,
                                  f"{kind} at >= {bar:g}% consistency: {c.model} on {c.platform} scored "
                                  f"{c.consistency:.1f}% at ${c.cost_per_panel_usd:.4f}/panel (target "
                                  f"${target_per_panel})", c.platform)
    best = max(candidates, key=lambda c: c.consistency, default=None)
    detail = f"; best was {best.model} on {best.platform} at {best.consistency:.1f}%" if best else ""
    return Recommendation("train LoRA", None, None,
                          f"no model reached {t.pick:g}% (or {t.premium_pick:g}% over the target){detail}: "
                          "pivot to LoRA training")
