"""The cost tables (data/webtoon.duckdb) as an asset: brought up to date from the ledger once per run
(incrementally: costs/tables.py), after the generating steps (in the season and trial jobs, and by
its automation condition after runs launched from the UI). Its materialization is the season's dashboard: spend and quote per episode, amortised
cost per panel against the target, budget left and the projection, as a table and as numbers that plot."""

from decimal import Decimal

from dagster import (AssetExecutionContext, AssetKey, AssetSelection, AssetsDefinition, AutomationCondition, Failure,
                     MaterializeResult, MetadataValue, TableColumn, TableRecord, TableSchema, asset, define_asset_job)

from webtoon_assets.costs import refresh_cost_tables
from webtoon_assets.costs.summary import DASHBOARD_COLUMNS, money_warnings, season_dashboard
from webtoon_assets.resources import DataRootResource

COST_TABLES = AssetKey("cost_tables")
# The tables alone: what a finished model trial asks for (series.py), and a rebuild from the launchpad.
COST_TABLES_JOB = define_asset_job("refresh_cost_tables", selection=AssetSelection.assets(COST_TABLES),
                                   description="Refresh data/webtoon.duckdb from the ledger, the bible and the trials.")
_TYPES = {"panels": "int", "meets_target": "bool", "series": "string", "provider": "string", "episode": "string"}


def _plain(v):
    return float(v) if isinstance(v, Decimal) else v


def cost_tables_asset(upstream: list[AssetKey]) -> AssetsDefinition:
    @asset(key=COST_TABLES, group_name="costs", kinds={"duckdb"}, deps=upstream,
           automation_condition=AutomationCondition.eager(),
           description="data/webtoon.duckdb: the ledger and the bible as tables and views (generations, "
                       "episode_spend, amortization, projection, platform_whatif, ...). Rebuilt whole from the "
                       "ledger; keep your own tables in your own database (README).")
    def cost_tables(context: AssetExecutionContext, data: DataRootResource) -> MaterializeResult:
        layout = data.layout
        problems: list[str] = []
        db = refresh_cost_tables(layout, log=lambda m: (problems.append(m), context.log.warning(m)))
        if db is None:
            raise Failure(description="; ".join(problems) or "the cost tables could not be built")
        episodes, seasons = season_dashboard(db)
        schema = TableSchema(columns=[TableColumn(c, _TYPES.get(c, "float")) for c in DASHBOARD_COLUMNS])
        meta: dict = {
            "path": MetadataValue.path(str(db)),
            "dashboard": MetadataValue.table(
                records=[TableRecord({k: _plain(v) for k, v in row.items() if v is not None}) for row in episodes],
                schema=schema),
        }
        warnings = money_warnings(db)
        if warnings:
            meta["money_warnings"] = MetadataValue.md("```\n" + warnings + "\n```")
        for s in seasons:  # numbers that plot, one set per series and provider
            prefix = f"{s['series']}/{s['provider']}"
            meta |= {f"{prefix}/spent_usd": float(s["spent_usd"] or 0),
                     f"{prefix}/quote_usd": float(s["quote_usd"] or 0),
                     f"{prefix}/amortised_per_panel_usd": float(s["amortised_per_panel_usd"] or 0),
                     f"{prefix}/target_per_panel_usd": float(s["target_per_panel_usd"]),
                     f"{prefix}/projected_season_usd": float(s["projected_season_usd"] or 0),
                     f"{prefix}/episodes_made": int(s["episodes_made"])}
        context.log.info(f"cost tables: {len(episodes)} episode row(s) -> {db}")
        return MaterializeResult(metadata=meta)

    return cost_tables
