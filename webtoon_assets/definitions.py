"""The code location: for each series under data/series, its assets, season job and sensor."""

from __future__ import annotations

import os

from dagster import Definitions, EnvVar, define_asset_job

from webtoon_assets.assets import build_series_assets
from webtoon_assets.assets.io import ManifestIOManager
from webtoon_assets.assets.partitions import episode_partitions
from webtoon_assets.assets.trial import build_trial
from webtoon_assets.bible import BibleError, load_series, series_ids
from webtoon_assets.bible.models import Trial
from webtoon_assets.gateway.resource import GatewayResource
from webtoon_assets.paths import DataLayout
from webtoon_assets.sensors import new_episode_sensor


def season_job_name(series_id: str) -> str:
    return f"{series_id}__season"


def trial_job_name(series_id: str) -> str:
    return f"{series_id}__trial"


def trial_candidates(layout: DataLayout, series_id: str) -> list[str]:
    """The trial's candidates from series.yaml; a broken bible must not stop the code location
    loading (its errors show when a run validates it), so it falls back to the defaults."""
    try:
        return load_series(layout, series_id).trial.candidates
    except BibleError:
        return Trial().candidates


def build_definitions(layout: DataLayout) -> Definitions:
    assets, jobs, sensors = [], [], []
    for series_id in series_ids(layout):
        partitions = episode_partitions(series_id)
        series_assets = build_series_assets(series_id, partitions)
        job = define_asset_job(season_job_name(series_id), selection=series_assets,
                               description=f"Every asset of one {series_id} episode.")
        trial = build_trial(series_id, trial_candidates(layout, series_id))
        assets += [*series_assets, trial]
        jobs += [job, define_asset_job(trial_job_name(series_id), selection=[trial],
                                       description=f"The model trial for {series_id}: one partition per candidate.")]
        sensors.append(new_episode_sensor(series_id, layout, partitions, job))
    return Definitions(
        assets=assets,
        jobs=jobs,
        sensors=sensors,
        resources={
            # The key is passed as an EnvVar so Dagster resolves it at run time and never shows it.
            "gateway": GatewayResource(data_dir=str(layout.root),
                                       fal_key=EnvVar("FAL_KEY") if os.environ.get("FAL_KEY") else None),
            "manifests": ManifestIOManager(data_dir=str(layout.root)),
        },
    )


defs = build_definitions(DataLayout.default())
