"""The cost study's verdicts and decision tree (seeds/000, "Post-Test Decision Tree"), as data in,
a recommendation out. Thresholds come from series.yaml (trial.thresholds)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from webtoon_assets.bible.models import Thresholds
from webtoon_assets.consistency.gate import RetakeEstimate
from webtoon_assets.consistency.lora_cost import LoraCost


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
    retakes: RetakeEstimate | None = None  # under the consistency gate: its retake rate, takes per accepted panel

    @property
    def cost_per_accepted_panel_usd(self) -> Decimal | None:
        """Cost per panel x takes per accepted panel (the gate's retakes paid in); None: none accepted."""
        if self.retakes is None:
            return self.cost_per_panel_usd
        return self.retakes.cost_per_accepted(self.cost_per_panel_usd)


@dataclass(frozen=True)
class Recommendation:
    action: str  # use | train LoRA | none (nothing measured: offline previews)
    endpoint: str | None
    model: str | None
    reason: str
    platform: str | None = None


def recommend(candidates: list[Candidate], t: Thresholds, target_per_panel: Decimal, gate: bool = False,
              lora: LoraCost | None = None) -> Recommendation:
    """Cheapest first: a model within the $/panel target needs ``pick`` (85); a premium one, over the
    target, needs ``premium_pick`` (90). None passing: train a LoRA. Only measured candidates count: offline (preview
    stand-ins) there is nothing to recommend from, so the answer is none, not a LoRA.

    With the consistency gate on (``gate``), cheapest means dollars per *accepted* panel: cost per
    panel x the takes each accepted panel needs (``Candidate.retakes``, from the model's trial scores),
    so a cheap model plus its retakes is weighed against a dearer model that needs fewer; the target
    is met or not on that figure too, and a model none of whose panels would pass the gate is passed over."""
    offline = [c for c in candidates if not c.measured]
    candidates = [c for c in candidates if c.measured]
    if offline and not candidates:
        return Recommendation("none", None, None,
                              f"offline previews are not measured: {len(offline)} candidate(s) tried on the preview "
                              "renderer, whose stand-ins show no model's drawing; run the trial with the platforms' "
                              "keys set (FAL_KEY, BFL_API_KEY, ...) to score the models' own images")

    def price(c: Candidate) -> Decimal | None:
        return c.cost_per_accepted_panel_usd if gate else c.cost_per_panel_usd

    for c in sorted(candidates, key=lambda c: (price(c) is None, price(c) or 0, c.endpoint)):
        usd = price(c)
        if usd is None:  # under the gate, none of its panels would be accepted
            continue
        premium = usd > target_per_panel
        bar = t.premium_pick if premium else t.pick
        if c.consistency >= bar:
            kind = "premium model (over the target)" if premium else "cheapest model"
            if not gate:
                return Recommendation("use", c.endpoint, c.model,
                                      f"{kind} at >= {bar:g}% consistency: {c.model} on {c.platform} scored "
                                      f"{c.consistency:.1f}% at ${c.cost_per_panel_usd:.4f}/panel (target "
                                      f"${target_per_panel})", c.platform)
            cheaper = sorted((o for o in candidates if o.cost_per_panel_usd < c.cost_per_panel_usd),
                             key=lambda o: (o.cost_per_panel_usd, o.endpoint))
            beaten = ("; cheaper per panel but not chosen: " + ", ".join(map(_per_accepted, cheaper))
                      if cheaper else "")
            r = c.retakes
            takes = (f" x {r.takes_per_accepted:.2f} takes per accepted panel ({r.retake_rate:.0%} of takes under "
                     f"the gate's {r.threshold:g}%, up to {r.max_retakes} retakes)" if r else "")
            return Recommendation("use", c.endpoint, c.model,
                                  f"{kind} by $ per accepted panel, at >= {bar:g}% consistency: {c.model} on "
                                  f"{c.platform} scored {c.consistency:.1f}%, ${c.cost_per_panel_usd:.4f}/panel"
                                  f"{takes} = ${usd:.4f}/accepted panel (target ${target_per_panel}){beaten}",
                                  c.platform)
    best = max(candidates, key=lambda c: c.consistency, default=None)
    detail = f"; best was {best.model} on {best.platform} at {best.consistency:.1f}%" if best else ""
    return Recommendation("train LoRA", None, None,
                          f"no model reached {t.pick:g}% (or {t.premium_pick:g}% over the target"
                          f"{', by $ per accepted panel' if gate else ''}){detail}: pivot to LoRA training"
                          + (f"; {lora.line()}" if lora is not None else ""))


def _per_accepted(c: Candidate) -> str:
    """A candidate's cost with its retakes, for a recommendation's reason."""
    r, usd = c.retakes, c.cost_per_accepted_panel_usd
    takes = "" if r is None else (f" x {r.takes_per_accepted:.2f} takes = ${usd:.4f}/accepted panel"
                                  if usd is not None else ", no panel would pass the gate")
    return f"{c.model} ${c.cost_per_panel_usd:.4f}/panel{takes} at {c.consistency:.1f}%"
