"""One series as a Definitions: its episode assets and checks, the season reader, the model trial and
its recommendation, the season and trial jobs, and the sensor that turns new scripts into runs."""

from __future__ import annotations

from dagster import (AssetKey, AssetSelection, DagsterRunStatus, DefaultSensorStatus, Definitions, RunRequest,
                     RunStatusSensorContext, SensorDefinition, define_asset_job, run_status_sensor)

from webtoon_assets.assets import GENERATING, episode_assets
from webtoon_assets.assets.checks import cost_check
from webtoon_assets.assets.cost_tables import COST_TABLES, COST_TABLES_JOB
from webtoon_assets.assets.partitions import episode_partitions
from webtoon_assets.assets.season_reader import season_reader_asset
from webtoon_assets.assets.trial import model_recommendation_asset, model_trial_asset
from webtoon_assets.bible import BibleError, load_series
from webtoon_assets.bible.models import Trial
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


def generating_keys(series_id: str) -> list[AssetKey]:
    """What cost_tables follows for this series: the episode assets that pay for generations. (Not the
    trial: as an upstream it would make every episode launch warn that it was never materialized;
    a finished trial asks for the tables instead, see ``trial_costs_sensor``.)"""
    return [AssetKey([series_id, a]) for a in GENERATING]


def trial_costs_sensor(series_id: str, trials) -> SensorDefinition:
    """After a successful trial run, rebuild the cost tables (model_trials, model_recommendation)."""
    @run_status_sensor(name=f"{series_id}__trial_costs", run_status=DagsterRunStatus.SUCCESS,
                       monitored_jobs=[trials], request_job=COST_TABLES_JOB,
                       default_status=DefaultSensorStatus.RUNNING,
                       description=f"A finished {series_id} trial run rebuilds the cost tables.")
    def trial_costs(context: RunStatusSensorContext) -> RunRequest:
        return RunRequest(run_key=f"after-{context.dagster_run.run_id}")

    return trial_costs


def series_definitions(layout: DataLayout, series_id: str) -> Definitions:
    partitions = episode_partitions(series_id)
    episode = episode_assets(series_id, partitions)
    reader = season_reader_asset(series_id)
    trial, recommendation = model_trial_asset(series_id, trial_candidates(layout, series_id)), \
        model_recommendation_asset(series_id)
    # An episode run ends with the season's reader and one rebuild of the cost tables (not one per step);
    # the cost check on its panels runs after that rebuild.
    season = define_asset_job(
        season_job_name(series_id),
        selection=AssetSelection.assets(*episode, reader, COST_TABLES),
        description=f"Every asset of one {series_id} episode, then the season reader and the cost tables.")
    trials = define_asset_job(
        trial_job_name(series_id), selection=AssetSelection.assets(trial, recommendation),
        description=f"The model trial for {series_id}: one partition per candidate, then the recommendation "
                    "(a finished run then rebuilds the cost tables).")
    return Definitions(
        assets=[*episode, reader, trial, recommendation],
        asset_checks=[cost_check(series_id, partitions)],
        jobs=[season, trials],
        sensors=[new_episode_sensor(series_id, layout, partitions, season), trial_costs_sensor(series_id, trials)],
    )
