"""Checks on every episode's panels, shown on each partition in the UI (WARN, never blocking):
cost per panel against the series target, as paid and amortised; and each panel's characters
against their reference sheets, by the series' consistency scorer. The checks are partitioned like
their asset, so each episode's results are recorded against that episode, and each message names it."""

import warnings
from decimal import Decimal
from pathlib import Path

import duckdb
from dagster import (AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, AssetChecksDefinition,
                     AssetCheckSpec, AssetKey, MetadataValue, PartitionsDefinition, PreviewWarning, multi_asset_check)

from webtoon_assets.bible import BibleError, Series, load_series
from webtoon_assets.costs import refresh_cost_tables
from webtoon_assets.costs.sql import literal
from webtoon_assets.consistency import Scorer, make_scorer
from webtoon_assets.manifests import ImageSet, Storyboard
from webtoon_assets.paths import DataLayout

COST_CHECK, CONSISTENCY_CHECK = "cost_per_panel_target", "character_consistency"
SHEET_BAND = (1 / 3, 2 / 3)  # a character sheet is a turnaround: its front view stands in the middle


def episode_check_spec(name: str, partitions: PartitionsDefinition, **kwargs) -> AssetCheckSpec:
    """A check partitioned like its episode asset: its results land on the episode that was made
    (``partitions_def`` on a check is a preview in Dagster 1.13; its warning is expected here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)
        return AssetCheckSpec(name, partitions_def=partitions, **kwargs)


def consistency_spec(series_id: str, partitions: PartitionsDefinition) -> AssetCheckSpec:
    return episode_check_spec(CONSISTENCY_CHECK, partitions, asset=AssetKey([series_id, "panels"]),
                              description="each panel's characters against their sheets (series.yaml consistency.scorer, "
                                          "else trial.scorer; the kept takes under consistency.gate)")


def cost_check(series_id: str, partitions: PartitionsDefinition) -> AssetChecksDefinition:
    """Cost per panel of the episode, as paid and amortised, against the series' target. It reads the
    cost tables, so it runs after cost_tables in the same run (``additional_deps``); launched with the
    panels alone, it first brings the tables up to date if they are older than the panels."""
    panels = AssetKey([series_id, "panels"])
    spec = episode_check_spec(COST_CHECK, partitions, asset=panels, additional_deps=[AssetKey("cost_tables")],
                              description="cost per panel, as paid and amortised, vs the target")

    @multi_asset_check(specs=[spec], name=f"{series_id}__{COST_CHECK}",
                       required_resource_keys={"data"})
    def check(context: AssetCheckExecutionContext):
        layout: DataLayout = context.resources.data.layout
        episode = context.partition_key
        latest = context.instance.get_latest_materialization_event(panels)
        built = layout.duckdb_path.stat().st_mtime if layout.duckdb_path.is_file() else 0.0
        if latest is None or built < latest.timestamp:
            refresh_cost_tables(layout, log=context.log.warning)
        try:
            series = load_series(layout, series_id)
        except BibleError as e:
            yield AssetCheckResult(check_name=COST_CHECK, asset_key=panels, passed=False,
                                   severity=AssetCheckSeverity.WARN, description=f"{episode}: {e}")
            return
        yield episode_cost_result(layout, series, episode)

    return check


def episode_cost_result(layout: DataLayout, series: Series, episode: str) -> AssetCheckResult:
    target = series.budget.target_per_panel_usd
    key = AssetKey([series.id, "panels"])
    try:
        con = duckdb.connect(str(layout.duckdb_path), read_only=True)
        try:
            rows = con.execute("SELECT provider, as_paid_per_panel_usd, amortised_per_panel_usd FROM amortization "
                               f"WHERE series = {literal(series.id)} AND episode = {literal(episode)}").fetchall()
        finally:
            con.close()
    except duckdb.Error as e:
        return AssetCheckResult(check_name=COST_CHECK, asset_key=key, passed=False, severity=AssetCheckSeverity.WARN,
                                description=f"{episode}: the cost tables could not be read: {e}")
    over = [f"{p}: as paid ${paid:.4f}, amortised ${amort:.4f} per panel" for p, paid, amort in rows
            if paid > target or amort > target]
    paid = max((r[1] for r in rows), default=Decimal(0))
    amort = max((r[2] for r in rows), default=Decimal(0))
    return AssetCheckResult(
        check_name=COST_CHECK, asset_key=key, passed=not over, severity=AssetCheckSeverity.WARN,
        description=f"{episode}: " + (f"over the target ${target}: " + "; ".join(over) if over else
                                      f"cost per panel ${paid:.4f} as paid, ${amort:.4f} amortised, "
                                      f"within the target ${target}"),
        metadata={"as_paid_per_panel_usd": float(paid), "amortised_per_panel_usd": float(amort),
                  "target_per_panel_usd": float(target)})


def scorer_kind(series: Series) -> str:
    """The scorer of the consistency check and gate: series.yaml ``consistency.scorer``, else
    ``trial.scorer``, except the paid vision judge, used on episodes only where consistency.scorer
    asks for it (a paid judge on every panel of every episode costs more than the check is worth)."""
    if series.consistency.scorer is not None:
        return series.consistency.scorer
    return series.trial.scorer if series.trial.scorer != "vision-judge" else "palette-structure"


class ConsistencyScores:
    """Scores each panel's characters against their sheets as the panel arrives (called while later
    panels are still being made), then reports the check. Preview stand-ins (the offline ``local``
    provider) are not scored: they show nothing a model drew, so the check says they were not measured
    and passes rather than warning on a number that means nothing."""

    def __init__(self, series: Series, board: Storyboard, sheets: ImageSet, scorer: Scorer | None = None):
        """``scorer``: the series' (``scorer_kind``); the vision judge must be given (it needs the gateway)."""
        self.series, self.episode = series, board.episode
        self.plans, self.sheets = {p.id: p for p in board.panels}, sheets.by_item()
        kind = scorer_kind(series)
        self.scorer = scorer or make_scorer(kind if kind != "vision-judge" else "palette-structure")
        self.scorer_name = self.scorer.name  # of the scores reported (the gate's judge, when it records them)
        self.scores: dict[tuple[str, str], float] = {}
        self.stand_ins: list[str] = []  # panels made by the preview renderer: not measured

    def add(self, panel_id: str, path: Path, provider: str) -> None:
        if provider == "local":
            self.stand_ins.append(panel_id)
            return
        self.record(panel_id, self.score(panel_id, path))

    def score(self, panel_id: str, path: Path, scorer: Scorer | None = None,
              boxes: dict[str, tuple[float, ...]] | None = None) -> dict[str, float]:
        """Each of the panel's characters, cropped by its box (``boxes``: detected, consistency.detector)
        or else by its place in the PANEL line, against the front view of their sheet: character id ->
        0-100 (the consistency gate scores its takes so too)."""
        plan, scorer = self.plans[panel_id], scorer or self.scorer
        n = len(plan.characters)
        out = {}
        for i, cid in enumerate(plan.characters):
            sheet = self.sheets[plan.sheet(cid)]  # the sheet of the outfit the panel draws them in
            box = (boxes or {}).get(cid) or (i / n, (i + 1) / n)
            out[cid] = scorer.score(Path(sheet.path), path, reference_box=SHEET_BAND, candidate_box=tuple(box))
        return out

    def record(self, panel_id: str, scores: dict[str, float]) -> None:
        """A panel's scores as the check reports them (the take the consistency gate kept)."""
        for cid, value in scores.items():
            self.scores[(panel_id, cid)] = value

    def result(self) -> AssetCheckResult:
        threshold = self.series.consistency.threshold_for(self.series.trial.thresholds)
        low = [f"{pid} {cid} {s:.0f}%" for (pid, cid), s in sorted(self.scores.items()) if s < threshold]
        values = list(self.scores.values())
        measured = bool(values) or not self.stand_ins
        meta = {"measured": measured, "panels_not_measured": len(self.stand_ins), "scorer": self.scorer_name}
        if not measured:
            return AssetCheckResult(
                check_name=CONSISTENCY_CHECK, passed=True, severity=AssetCheckSeverity.WARN,
                description=f"{self.episode}: not measured (preview stand-ins): {len(self.stand_ins)} panel(s) made "
                            "offline by the preview renderer; consistency is scored on a model's images",
                metadata=meta)
        skipped = (f"; {len(self.stand_ins)} preview stand-in panel(s) not measured" if self.stand_ins else "")
        return AssetCheckResult(
            check_name=CONSISTENCY_CHECK, passed=not low, severity=AssetCheckSeverity.WARN,
            description=f"{self.episode}: " + ((f"under {threshold:g}% ({self.scorer_name}): " + ", ".join(low)) if low
                                               else f"every character at or over {threshold:g}% ({self.scorer_name})")
                        + skipped,
            metadata={**meta, "mean_consistency": round(sum(values) / len(values), 2) if values else 100.0,
                      "min_consistency": round(min(values, default=100.0), 2),
                      "panels_under_threshold": len({x.split()[0] for x in low}),
                      "low": MetadataValue.md("\n".join(f"- {x}" for x in low) or "_none_")})
