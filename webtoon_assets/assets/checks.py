"""Checks on every episode's panels, shown on each partition in the UI (WARN, never blocking):
cost per panel against the series target, as paid and amortised; and each panel's characters
against their reference sheets, by the series' consistency scorer."""

from decimal import Decimal
from pathlib import Path

import duckdb
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey, MetadataValue

from webtoon_assets.bible import Series
from webtoon_assets.consistency import make_scorer
from webtoon_assets.manifests import ImageSet, Storyboard
from webtoon_assets.paths import DataLayout

COST_CHECK, CONSISTENCY_CHECK = "cost_per_panel_target", "character_consistency"
SHEET_BAND = (1 / 3, 2 / 3)  # a character sheet is a turnaround: its front view stands in the middle


def check_specs(series_id: str) -> list[AssetCheckSpec]:
    key = AssetKey([series_id, "panels"])
    return [AssetCheckSpec(COST_CHECK, asset=key, description="cost per panel, as paid and amortised, vs the target"),
            AssetCheckSpec(CONSISTENCY_CHECK, asset=key,
                           description="each panel's characters against their sheets (series.yaml trial.scorer)")]


def cost_check(layout: DataLayout, series: Series, episode: str) -> AssetCheckResult:
    target = series.budget.target_per_panel_usd
    try:
        con = duckdb.connect(str(layout.duckdb_path), read_only=True)
        try:
            rows = con.execute("SELECT provider, as_paid_per_panel_usd, amortised_per_panel_usd FROM amortization "
                               "WHERE series = ? AND episode = ?", [series.id, episode]).fetchall()
        finally:
            con.close()
    except duckdb.Error as e:
        return AssetCheckResult(check_name=COST_CHECK, passed=False, severity=AssetCheckSeverity.WARN,
                                description=f"the cost tables could not be read: {e}")
    over = [f"{p}: as paid ${paid:.4f}, amortised ${amort:.4f} per panel" for p, paid, amort in rows
            if paid > target or amort > target]
    paid = max((r[1] for r in rows), default=Decimal(0))
    amort = max((r[2] for r in rows), default=Decimal(0))
    return AssetCheckResult(
        check_name=COST_CHECK, passed=not over, severity=AssetCheckSeverity.WARN,
        description=("over the target $" + f"{target}: " + "; ".join(over)) if over else
        f"within the target ${target} per panel",
        metadata={"as_paid_per_panel_usd": float(paid), "amortised_per_panel_usd": float(amort),
                  "target_per_panel_usd": float(target)})


class ConsistencyScores:
    """Scores each panel's characters against their sheets as the panel arrives (called while later
    panels are still being made), then reports the check."""

    def __init__(self, series: Series, board: Storyboard, sheets: ImageSet):
        self.series, self.plans, self.sheets = series, {p.id: p for p in board.panels}, sheets.by_item()
        kind = series.trial.scorer if series.trial.scorer != "vision-judge" else "palette-structure"
        self.scorer = make_scorer(kind)  # a paid judge on every panel of every episode would cost too much
        self.scores: dict[tuple[str, str], float] = {}
        self.offline = False

    def add(self, panel_id: str, path: Path, provider: str) -> None:
        plan = self.plans[panel_id]
        self.offline = provider == "local"
        n = len(plan.characters)
        for i, cid in enumerate(plan.characters):
            self.scores[(panel_id, cid)] = self.scorer.score(Path(self.sheets[cid].path), path,
                                                             reference_box=SHEET_BAND, candidate_box=(i / n, (i + 1) / n))

    def result(self) -> AssetCheckResult:
        threshold = self.series.trial.thresholds.acceptable
        low = [f"{pid} {cid} {s:.0f}%" for (pid, cid), s in sorted(self.scores.items()) if s < threshold]
        values = list(self.scores.values())
        offline = " (offline previews: these compare the stand-ins, not a model's drawing)" if self.offline else ""
        return AssetCheckResult(
            check_name=CONSISTENCY_CHECK, passed=not low, severity=AssetCheckSeverity.WARN,
            description=((f"under {threshold:g}% ({self.scorer.name}): " + ", ".join(low)) if low else
                         f"every character at or over {threshold:g}% ({self.scorer.name})") + offline,
            metadata={"mean_consistency": round(sum(values) / len(values), 2) if values else 100.0,
                      "min_consistency": round(min(values, default=100.0), 2),
                      "panels_under_threshold": len({x.split()[0] for x in low}), "scorer": self.scorer.name,
                      "low": MetadataValue.md("\n".join(f"- {x}" for x in low) or "_none_")})
