"""The consistency gate in an episode's panels step (series.yaml ``consistency:``; the logic is in
``webtoon_assets.consistency.gate``).

Each panel with characters is scored as it lands, by the scorer and crops of the consistency check
(``ConsistencyScores``). When every panel's first take is made, the panels under the threshold are
retaken: each retake is the panel's request with a derived seed, made through the gateway (cached,
reserved against the episode's budget, a ledger row under ``panels`` as ``<panel>~retake<n>``), and
scored in turn, up to ``max_retakes``. Retakes come after every first take, so they spend only what
the episode's panels leave of its budget; a refusal stops retaking and keeps the best so far. The best
take is published as the panel, its manifest item records every take (``ImageItem.gate``), the
check reports the kept takes' scores, and the step's metadata counts the retakes and their cost.

Offline (the preview renderer) the scores compare stand-ins and mean nothing: ``gate: true`` then
leaves the panels as they are (the check reports them unmeasured); ``gate: always`` runs the gate on
them anyway, counting list-price retakes like any offline generation.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

from dagster import AssetCheckResult, Failure, MetadataValue

from webtoon_assets.assets.checks import ConsistencyScores, scorer_kind
from webtoon_assets.consistency import Scorer, make_scorer
from webtoon_assets.consistency.detect import PANEL_LINE, Detection, make_detector, panel_line_boxes
from webtoon_assets.consistency.gate import GateOutcome, GateStop, Take, retake_request, run_gate
from webtoon_assets.gateway import Attribution, GenerationRequest, GenerationResult
from webtoon_assets.manifests import ImageItem, ImageSet, PanelGate, Storyboard, TakeRecord
from webtoon_assets.resources.gateway import GenerationSession
from webtoon_assets.resources.previews import contact_sheet_md, thumbnail

OFFLINE = "local"  # the preview renderer's provider name


class _SessionJudge:
    """What the vision judge uses of the gateway (its store, text requests), through the step's
    session, so each judgement is in the step's cost metadata as well as in the ledger."""

    def __init__(self, session: GenerationSession):
        self.store = session.gateway.store
        self.generate_text = session.generate_text


class ConsistencyGate:
    """One panels step's scoring: ``add`` is the step's ``on_result`` (each first take as it lands),
    ``settle`` retakes and keeps the best, ``check_result`` is the consistency check's result."""

    def __init__(self, session: GenerationSession, board: Storyboard, sheets: ImageSet):
        self.s = session
        self.series = series = session.series()
        self.cfg = series.consistency
        self.threshold = self.cfg.threshold_for(series.trial.thresholds)
        self.kind = scorer_kind(series)
        self.plans = {p.id: p for p in board.panels}
        try:
            self.check = ConsistencyScores(series, board, sheets)  # the judge, if asked, is made per judgement
        except ValueError as e:  # an embedding scorer without its model
            raise Failure(description=f"consistency ({self.kind}): {e}", allow_retries=False) from e
        if self.kind == "vision-judge":
            self.check.scorer_name = self.kind  # its scores are the judge's (offline, previews are not measured)
        self.first: dict[str, tuple[str, dict[str, float]]] = {}  # gated panel -> (provider, first take's scores)
        judge = series.trial.judge
        # where each take's characters stand (consistency.detector): its crops and, kept, the lettering's tails
        self.detector = make_detector(
            self.cfg.detector, _SessionJudge(session), judge.endpoint, judge.arguments,
            Attribution(series=series.id, episode=session.episode, asset="panels", item="detect"),
            {cid: f"{c.name}, {c.look}" for cid, c in series.characters.items()})
        self.detections: dict[str, Detection] = {}  # take label (p03, p03~retake1) -> its boxes
        self.providers: set[str] = set()
        self._lock = threading.Lock()

    # -- scoring ------------------------------------------------------------------------------------
    def gated(self, provider: str) -> bool:
        return self.cfg.gate == "always" or (self.cfg.gate is True and provider != OFFLINE)

    def scorer(self, label: str, provider: str) -> Scorer:
        """The series' scorer; the vision judge is a priced request per judgement, attributed to the
        panel (``p03~judge``, ``p03~retake1~judge``). Offline it cannot answer: the check's scorer stands in."""
        if self.kind != "vision-judge" or provider == OFFLINE:
            return self.check.scorer
        judge = self.series.trial.judge
        return make_scorer("vision-judge", _SessionJudge(self.s), judge.endpoint, judge.arguments,  # type: ignore[arg-type]
                           Attribution(series=self.series.id, episode=self.s.episode, asset="panels",
                                       item=f"{label}~judge"))

    def detect(self, item: str, label: str, path: Path) -> Detection:
        """Where the take's characters stand; recorded under its label (the kept take's go in the manifest)."""
        try:
            found = self.detector.detect(path, self.plans[item].characters, label)
        except ValueError as e:  # the judge answered something that is not boxes
            raise Failure(description=f"character boxes of {self.s.episode} {label}: {e}", allow_retries=False) from e
        with self._lock:
            self.detections[label] = found
        return found

    def score(self, item: str, label: str, path: Path, provider: str) -> dict[str, float]:
        boxes = self.detect(item, label, path).boxes
        try:
            return self.check.score(item, path, self.scorer(label, provider), boxes)
        except ValueError as e:  # the judge answered something that is not a score
            raise Failure(description=f"consistency of {self.s.episode} {label}: {e}", allow_retries=False) from e

    def add(self, item: str, path: Path, provider: str) -> None:
        """A panel's first take has landed (on the step's finishing threads)."""
        with self._lock:
            self.providers.add(provider)
        if self.plans[item].characters and self.gated(provider):
            scores = self.score(item, item, path, provider)
            with self._lock:
                self.first[item] = (provider, scores)
        elif provider == OFFLINE:
            self.detect(item, item, path)  # offline the vision judge's stand-in answers (at list price)
            self.check.add(item, path, provider)  # a stand-in: not measured
        else:
            self.check.record(item, self.score(item, item, path, provider))

    # -- retakes ------------------------------------------------------------------------------------
    def settle(self, requests: list[GenerationRequest], manifest: ImageSet,
               meta: dict[str, Any]) -> tuple[ImageSet, dict[str, Any]]:
        """Retake the panels under the threshold and keep each one's best take: the manifest and the
        metadata of ``make_images``, updated."""
        meta = {**meta, "consistency_gate": self.state()}
        if not self.first:
            return self._with_boxes(manifest, {}), meta | self.detection_metadata()
        asked = {r.attribution.item: r for r in requests}
        made = manifest.by_item()
        stop = GateStop()

        def gate(item: str) -> GateOutcome:
            scores, request = self.first[item][1], asked[item]

            def retake(n: int) -> Take:
                again = retake_request(request, n)
                result = self.s.generate(again)
                label = again.attribution.item
                return Take(n, again.arguments.get("seed"), self.score(item, label, result.path, result.provider),
                            result)

            return run_gate(item, Take(0, request.arguments.get("seed"), scores), self.threshold,
                            self.cfg.max_retakes, retake, stop)

        order = [r.attribution.item for r in requests if r.attribution.item in self.first]
        workers = max(1, self.s.gateway.route(asked[order[0]])[1].concurrency)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="retake") as pool:
            outcomes = dict(zip(order, pool.map(gate, order)))

        items = []
        for it in manifest.items:
            if (o := outcomes.get(it.item)) is None:
                items.append(it)
                continue
            best = o.best
            record = PanelGate(
                threshold=self.threshold, take=best.n, seed=best.seed, score=best.score, passed=o.passed,
                stopped=o.stopped, takes=[TakeRecord(
                    take=t.n, seed=t.seed, score=t.score, scores=t.scores,
                    status=t.result.status if t.result is not None else it.status,
                    key=t.result.key if t.result is not None else it.key) for t in o.takes])
            if best.result is None:  # the first take stays
                items.append(it.model_copy(update={"gate": record}))
            else:
                items.append(self._kept(it, best.result, record))
            if self.first[it.item][0] == OFFLINE:
                self.check.stand_ins.append(it.item)  # offline the check still says: not measured
            else:
                self.check.record(it.item, best.scores)
        manifest = self._with_boxes(manifest.model_copy(update={"items": items}), outcomes)
        meta |= self.metadata(outcomes, made, stop) | self.detection_metadata()
        if any(o.best.n for o in outcomes.values()):  # the contact sheet shows the takes kept
            meta["preview"] = MetadataValue.md(contact_sheet_md(thumbnail(Path(i.path)) for i in items))
        return manifest, meta

    def _with_boxes(self, manifest: ImageSet, outcomes: dict[str, GateOutcome]) -> ImageSet:
        """Each panel's boxes: its kept take's detection (the lettering's tails point by them)."""
        items = []
        for it in manifest.items:
            kept = outcomes.get(it.item)
            label = it.item if kept is None or kept.best.n == 0 else kept.best.result.request.attribution.item
            found = self.detections.get(label)
            if found is None:  # no characters, or not looked at: the PANEL line's order
                found = Detection(panel_line_boxes(self.plans[it.item].characters), PANEL_LINE)
            items.append(it.model_copy(update={"boxes": {c: list(b) for c, b in found.boxes.items()},
                                               "boxes_source": found.describe(),
                                               "boxes_detected": found.found}))
        return manifest.model_copy(update={"items": items})

    def detection_metadata(self) -> dict[str, Any]:
        """How the step found its characters: the detector, and the panels whose boxes are assumed."""
        found = [d for d in self.detections.values() if d.boxes]  # of takes with characters
        sources = sorted({d.source for d in found}) or ["panel-line"]
        meta: dict[str, Any] = {"character_boxes": ", ".join(sources), "detections": len(found)}
        if partial := [label for label, d in sorted(self.detections.items()) if d.not_found]:
            meta["characters_not_found"] = MetadataValue.md("\n".join(
                f"- {label}: {', '.join(self.detections[label].not_found)} (panel-line band used)" for label in partial))
        return meta

    def _kept(self, first: ImageItem, result: GenerationResult, record: PanelGate) -> ImageItem:
        """A retake kept: published as the panel (its readable copy under output/ is replaced)."""
        readable = self.s.gateway.store.publish(result.key, Path(first.path))
        return ImageItem(item=first.item, path=str(readable), store_path=str(result.path), key=result.key,
                         sha256=result.sha256, status=result.status, endpoint=result.request.endpoint,
                         provider=result.provider, width=result.width, height=result.height,
                         references=[r.role for r in result.request.references], gate=record)

    # -- what the step reports ------------------------------------------------------------------------
    def state(self) -> str:
        if self.cfg.gate is False:
            return "off"
        if self.cfg.gate is True and self.providers and self.providers <= {OFFLINE}:
            return ("off offline: preview stand-ins are not measured (consistency.gate: always runs it on them, "
                    "at list price)")
        kind = self.kind
        if kind == "vision-judge" and self.providers and self.providers <= {OFFLINE}:
            kind = f"{self.check.scorer.name}: the judge cannot answer offline"
        return f"on: under {self.threshold:g}% ({kind}), up to {self.cfg.max_retakes} retake(s)"

    def metadata(self, outcomes: dict[str, GateOutcome], first: dict[str, ImageItem], stop: GateStop) -> dict[str, Any]:
        retakes = [t.result for o in outcomes.values() for t in o.takes if t.result is not None]
        made = [r for r in retakes if r.status == "generated"]
        under = [o for o in outcomes.values() if not o.passed]
        rows = ["| panel | take | seed | score | status | spent | quote | kept |", "|---|---|---|---|---|---|---|---|"]
        for item, o in outcomes.items():
            if not o.retakes:
                continue
            for t in o.takes:
                r = t.result
                status = (r.status if r is not None else first[item].status)
                spent, quote = (f"${r.billed_usd}", f"${r.list_usd}") if r is not None else ("-", "-")
                rows.append(f"| {item} | {t.n} | {t.seed} | {t.score:.1f} | {'paid' if status == 'generated' else 'hit'} "
                            f"| {spent} | {quote} | {'yes' if t is o.best else ''} |")
        meta: dict[str, Any] = {
            "gate_threshold": self.threshold,
            "gate_max_retakes": self.cfg.max_retakes,
            "panels_gated": len(outcomes),
            "panels_retaken": sum(o.retakes > 0 for o in outcomes.values()),
            "retakes": len(retakes),
            "retakes_made": len(made),
            "retakes_spent_usd": float(sum((r.billed_usd for r in retakes), Decimal(0))),
            "retakes_quote_usd": float(sum((r.list_usd for r in made), Decimal(0))),
            "panels_under_threshold": len(under),
            "panels_kept_retake": sum(o.best.n > 0 for o in outcomes.values()),
            "retake_table": MetadataValue.md("\n".join(rows) if len(rows) > 2 else "_no retakes_"),
        }
        stopped = {item: o.stopped for item, o in outcomes.items() if o.stopped}
        if stopped:
            meta["retakes_stopped"] = MetadataValue.md("\n".join(f"- {i}: {why}" for i, why in stopped.items()))
        if stop.reason:
            self.s.context.log.warning(f"consistency gate of {self.s.episode}: retaking stopped: {stop.reason}; "
                                       "the best take so far is kept")
        self.s.context.log.info(
            f"consistency gate of {self.s.episode}: {meta['panels_retaken']} of {len(outcomes)} panel(s) retaken, "
            f"{len(retakes)} retake(s) ({len(made)} made, ${meta['retakes_spent_usd']} billed, list "
            f"${meta['retakes_quote_usd']}); {len(under)} still under {self.threshold:g}%")
        return meta

    def check_result(self) -> AssetCheckResult:
        return self.check.result()

