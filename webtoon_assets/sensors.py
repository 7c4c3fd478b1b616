"""A sensor per series: a new episode script on disk becomes a partition and a run. A script with
errors is not registered; every tick names it and its first errors: as the tick's skip reason when
nothing else is ready, in the tick's cursor (shown in the UI's tick history) and log when valid
scripts are requested beside it."""

from __future__ import annotations

from pathlib import Path

from dagster import (DefaultSensorStatus, DynamicPartitionsDefinition, JobDefinition, RunRequest, SensorDefinition,
                     SensorEvaluationContext, SensorResult, SkipReason, sensor)

from webtoon_assets.bible import BibleError, episode_ids, load_episode, load_series
from webtoon_assets.paths import DataLayout

FIRST_ERRORS = 3  # per rejected script on the tick; the tick's log has them all


def rejection(e: BibleError) -> str:
    """``ep05.txt rejected, 2 problem(s): line 3: ...; line 5: ...`` (the first few errors)."""
    shown = "; ".join(e.problems[:FIRST_ERRORS])
    more = f" (+{len(e.problems) - FIRST_ERRORS} more in the tick's log)" if len(e.problems) > FIRST_ERRORS else ""
    return f"{Path(e.path).name} rejected, {len(e.problems)} problem(s): {shown}{more}"


def new_episode_sensor(series_id: str, layout: DataLayout, partitions: DynamicPartitionsDefinition,
                       job: JobDefinition) -> SensorDefinition:
    @sensor(name=f"{series_id}__new_episodes", job=job, minimum_interval_seconds=30,
            default_status=DefaultSensorStatus.RUNNING,
            description=f"Registers new scripts in data/series/{series_id}/episodes/ and runs them.")
    def new_episodes(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        known = set(context.instance.get_dynamic_partitions(partitions.name))
        candidates = [e for e in episode_ids(layout, series_id) if e not in known]
        if not candidates:
            return SkipReason("no new episode scripts")
        try:
            series = load_series(layout, series_id)
        except BibleError as e:
            return SkipReason(str(e))
        ready, rejected = [], []
        for ep in candidates:  # only valid scripts become partitions; a broken one is reported, not run
            try:
                load_episode(layout, series, ep)
                ready.append(ep)
            except BibleError as e:
                rejected.append(e)
        for e in rejected:
            context.log.warning(str(e))
        summary = " | ".join(rejection(e) for e in rejected)
        if not ready:
            return SkipReason(f"no new valid scripts: {summary}")
        if rejected:
            context.log.info(f"requested {', '.join(ready)}; not registered: {summary}")
        return SensorResult(
            run_requests=[RunRequest(run_key=f"{series_id}/{ep}", partition_key=ep) for ep in ready],
            dynamic_partitions_requests=[partitions.build_add_request(ready)],
            # a tick cannot carry both runs and a skip reason: the cursor, shown in the tick history, names them
            cursor=f"not registered: {summary}" if rejected else ("no rejected scripts" if context.cursor else None),
        )

    return new_episodes
