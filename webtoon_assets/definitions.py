"""The code location: one Definitions per series under data/series (webtoon_assets.series), merged,
with the cost tables that follow them all and the resources every asset shares."""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from webtoon_assets.assets.cost_tables import COST_TABLES_JOB, cost_tables_asset
from webtoon_assets.bible import series_ids
from webtoon_assets.paths import DataLayout
from webtoon_assets.resources import DataRootResource, GatewayResource, ManifestIOManager, provider_resource
from webtoon_assets.series import generating_keys, season_job_name, series_definitions, trial_job_name

__all__ = ["build_definitions", "defs", "season_job_name", "trial_job_name"]


def build_definitions(layout: DataLayout, provider: str = "") -> Definitions:
    """``provider``: '' = WEBTOON_PROVIDER, else fal when FAL_KEY is set, else the offline renderer."""
    ids = series_ids(layout)
    data = DataRootResource(data_dir=str(layout.root))
    chosen = provider_resource(provider)
    shared = Definitions(
        assets=[cost_tables_asset([k for sid in ids for k in generating_keys(sid)])],
        jobs=[COST_TABLES_JOB],
        # A step mostly waits on a provider: a process per step (the default) only adds seconds of
        # start-up to every step of a UI run. Pools and the daemon's run queue work the same.
        executor=in_process_executor,
        resources={
            "data": data,
            # the same provider instance is nested in the gateway and shown (and set per run) as its own resource
            "provider": chosen,
            "gateway": GatewayResource(data=data, provider=chosen),
            "manifests": ManifestIOManager(data_dir=str(layout.root)),
        },
    )
    return Definitions.merge(shared, *(series_definitions(layout, sid) for sid in ids))


defs = build_definitions(DataLayout.default())
