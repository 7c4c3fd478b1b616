"""Cost tables in DuckDB, built from the ledger and the bible."""

from webtoon_assets.costs.tables import refresh_cost_tables

__all__ = ["refresh_cost_tables"]
