"""Produce every episode of every series on the project's Dagster instance, without the daemon."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

from dagster import DagsterEventType, DagsterInstance, Definitions
from dagster._core.utils import make_new_run_id

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


# Episodes in flight at once: a step's work is mostly Pillow, zlib and waiting on a platform, which
# let go of the GIL, so a second episode's steps fill the time the first one's leave.
OVERLAP = 2
GATE_POLL_SECONDS = 0.1


def run_season(instance: DagsterInstance, defs: Definitions, layout: DataLayout, series_id: str,
               episodes: list[str] | None = None, overlap: int = OVERLAP) -> list[str]:
    """Materialize every asset for each episode, one run per episode; returns the run ids. First
    ends runs a killed process left behind (and frees their pool slots) and sweeps dead writers'
    temp files; a step waiting for a pool slot says so, naming the runs that hold them.

    Up to ``overlap`` episodes run at once, in order: an episode's run starts once the one before it
    has begun its panels. Its sheets, plates and LoRAs (shared across the season) are made by then,
    so each is paid by the first episode that needs it, as when episodes run one after another, and
    an episode's "as paid" cost does not depend on timing. The first run that fails stops the season:
    no later episode starts, the ones running finish, and its error is raised."""
    start_up(instance, layout.root)
    registered = register_episodes(instance, layout, series_id)
    job = defs.resolve_job_def(season_job_name(series_id))
    todo = episodes or registered
    run_ids = [make_new_run_id() for _ in todo]
    if overlap <= 1 or len(todo) <= 1:
        for ep, run_id in zip(todo, run_ids):
            _run_episode(job, instance, series_id, ep, run_id)
        return run_ids
    with ThreadPoolExecutor(max_workers=overlap, thread_name_prefix="episode") as pool:
        running: list[Future] = []
        for ep, run_id in zip(todo, run_ids):
            if running:
                _past_its_sheets(instance, run_ids[len(running) - 1], running[-1], f"{series_id}__panels")
                if any(f.done() and f.exception() is not None for f in running):
                    break  # a failed episode stops the season
            running.append(pool.submit(_run_episode, job, instance, series_id, ep, run_id))
        for f in running:
            f.result()  # the first failure, in episode order
    return run_ids


def _run_episode(job, instance: DagsterInstance, series_id: str, ep: str, run_id: str) -> None:
    print(f"== {series_id} / {ep}", flush=True)
    execute_run(job, instance, f"{series_id} / {ep}", run_id=run_id, partition_key=ep, run_config=RUN_CONFIG)


def _past_its_sheets(instance: DagsterInstance, run_id: str, run: Future, panels_step: str) -> None:
    """Wait until the run has started its panels step (every asset before it is made), or ended."""
    while not run.done():
        events = instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)
        if any(e.step_key == panels_step for e in events):
            return
        time.sleep(GATE_POLL_SECONDS)
