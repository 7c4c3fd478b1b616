"""Produce every episode of every series on the project's Dagster instance, without the daemon."""

from __future__ import annotations

from dagster import DagsterInstance, Definitions

from webtoon_assets.bible import episode_ids, load_episode, load_series
from webtoon_assets.series import season_job_name
from webtoon_assets.assets.partitions import episode_partitions
from webtoon_assets.paths import DataLayout
from webtoon_assets.runs import execute_run, start_up

# INFO hides Dagster's per-event debug lines and keeps the per-asset, per-panel progress.
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def register_episodes(instance: DagsterInstance, layout: DataLayout, series_id: str) -> list[str]:
    """Validate every script of a series, then add its episodes as partitions (idempotent)."""
    series = load_series(layout, series_id)
    episodes = [load_episode(layout, series, e).id for e in episode_ids(layout, series_id)]
    name = episode_partitions(series_id).name
    new = [e for e in episodes if not instance.has_dynamic_partition(name, e)]
    if new:
        instance.add_dynamic_partitions(name, new)
    return episodes


def run_season(instance: DagsterInstance, defs: Definitions, layout: DataLayout, series_id: str,
               episodes: list[str] | None = None) -> list[str]:
    """Materialize every asset for each episode, one run per episode; returns the run ids. First
    ends runs a killed process left behind (and frees their pool slots) and sweeps dead writers'
    temp files; a step waiting for a pool slot says so, naming the runs that hold them."""
    start_up(instance, layout.root)
    registered = register_episodes(instance, layout, series_id)
    job = defs.resolve_job_def(season_job_name(series_id))
    run_ids = []
    for ep in episodes or registered:
        print(f"== {series_id} / {ep}", flush=True)
        result = execute_run(job, instance, f"{series_id} / {ep}", partition_key=ep, run_config=RUN_CONFIG)
        run_ids.append(result.run_id)
    return run_ids
