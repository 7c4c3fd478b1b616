"""The consistency gate (series.yaml ``consistency:``), as plain logic: a panel whose characters
score under the threshold is asked again with a new seed, up to N times, and the best take is kept;
and, for the trial, what such a gate costs a model: its retake rate and its dollars per accepted panel.

A retake is the panel's own request with a seed derived from (the original seed, the retake's
number), so it is a request like any other: keyed, cached, reserved against the budget and a ledger
row, attributed to the panel's item with ``~retake<n>``. Its decisions depend only on the scores,
and the scores only on the images (cached answers, for a paid judge), so an episode run again asks
for the same retakes and finds them all in the store.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

from webtoon_assets.gateway import GenerationRequest, stable_seed
from webtoon_assets.gateway.budget import BudgetExceeded
from webtoon_assets.gateway.retry import GenerationFailed

RETAKE_MARK = "~retake"  # a retake's ledger item: "<panel>~retake<n>"


def retake_seed(seed: int, n: int) -> int:
    """The seed of a panel's n-th retake: the same on every run, different for every n."""
    return stable_seed("retake", seed, n)


def retake_request(request: GenerationRequest, n: int) -> GenerationRequest:
    """The panel's request asked again (retake ``n`` >= 1): a new seed, the same everything else, and
    an attribution that says it is a retake of the same panel (asset ``panels``, item ``p03~retake1``)."""
    who = request.attribution
    update: dict[str, Any] = {"attribution": who.model_copy(update={"item": f"{who.item}{RETAKE_MARK}{n}"})}
    if "seed" in request.arguments:
        update["arguments"] = {**request.arguments, "seed": retake_seed(int(request.arguments["seed"]), n)}
    else:  # no seed to vary: a new take is a new key all the same
        update["take"] = request.take + n
    return request.model_copy(update=update)


@dataclass(frozen=True)
class Take:
    """One take of a panel: ``n`` 0 is the panel as first asked, n >= 1 its n-th retake."""

    n: int
    seed: int | None
    scores: dict[str, float]  # character id -> 0-100
    result: Any = None  # what made it (the gateway's result), for the asker

    @property
    def score(self) -> float:
        """The panel's score: its weakest character's."""
        return min(self.scores.values(), default=100.0)


@dataclass
class GateOutcome:
    item: str
    threshold: float
    takes: list[Take]
    stopped: str | None = None  # why retaking stopped short (a budget refusal, a failed retake)

    @property
    def best(self) -> Take:
        """The take kept: the highest score; of equal scores, the earliest (fewest retakes)."""
        return max(self.takes, key=lambda t: (t.score, -t.n))

    @property
    def passed(self) -> bool:
        return self.best.score >= self.threshold

    @property
    def retakes(self) -> int:
        return len(self.takes) - 1


@dataclass
class GateStop:
    """Shared by an episode's panels: once the budget refuses a retake, no panel asks for another."""

    reason: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def stop(self, reason: str) -> None:
        with self._lock:
            self.reason = self.reason or reason


def run_gate(item: str, first: Take, threshold: float, max_retakes: int, retake: Callable[[int], Take],
             stop: GateStop | None = None) -> GateOutcome:
    """Retake ``item`` while its best take is under ``threshold``, at most ``max_retakes`` times.
    ``retake(n)`` makes and scores the n-th retake. A budget refusal stops retaking (for every panel
    sharing ``stop``) and keeps the best so far; a failed retake stops this panel's, saying why."""
    out = GateOutcome(item, threshold, [first])
    n = 0
    while out.best.score < threshold and n < max_retakes:
        if stop is not None and stop.reason is not None:
            out.stopped = f"not retaken further: {stop.reason}"
            break
        n += 1
        try:
            out.takes.append(retake(n))
        except BudgetExceeded as e:
            out.stopped = f"retake {n} refused by the budget: {e}"
            if stop is not None:
                stop.stop(f"the budget refused {item}'s retake {n}")
            break
        except GenerationFailed as e:
            out.stopped = f"retake {n} failed: {e}"
            break
    return out


# -- what a gate costs a model: the trial's estimate ------------------------------------------------

@dataclass(frozen=True)
class RetakeEstimate:
    """From a model's trial scores: each take under ``threshold`` with probability ``retake_rate``
    (the share of its variations under it), takes independent, at most ``max_retakes`` retakes."""

    threshold: float
    max_retakes: int
    retake_rate: float  # share of takes under the threshold
    expected_takes: float  # takes per panel: 1 + p + ... + p^N
    acceptance: float  # share of panels that end at or over the threshold: 1 - p^(N+1)

    @property
    def takes_per_accepted(self) -> float:
        """Takes paid per panel that ends accepted (inf: none would)."""
        return self.expected_takes / self.acceptance if self.acceptance > 0 else math.inf

    @property
    def retakes_per_accepted(self) -> float:
        return self.takes_per_accepted - 1

    def cost_per_accepted(self, cost_per_panel: Decimal) -> Decimal | None:
        """Dollars per accepted panel: cost per panel x takes per accepted panel (None: none accepted)."""
        if math.isinf(self.takes_per_accepted):
            return None
        return (cost_per_panel * Decimal(repr(self.takes_per_accepted))).quantize(Decimal("0.000001"))


def retake_estimate(scores: list[float], threshold: float, max_retakes: int) -> RetakeEstimate:
    p = sum(s < threshold for s in scores) / len(scores) if scores else 0.0
    takes = float(max_retakes + 1) if p == 1 else (1 - p ** (max_retakes + 1)) / (1 - p)
    return RetakeEstimate(threshold, max_retakes, round(p, 6), round(takes, 6), round(1 - p ** (max_retakes + 1), 6))
