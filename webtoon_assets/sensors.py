"""A sensor per series: a new episode script on disk becomes a partition and a run."""

from __future__ import annotations

from dagster import (DefaultSensorStatus, DynamicPartitionsDefinition, JobDefinition, RunRequest, SensorDefinition,
                     SensorEvaluationContext, SensorResult, SkipReason, sensor)

from webtoon_assets.bible import BibleError, episode_ids, load_episode, load_series
from webtoon_assets.paths import DataLayout


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
        ready, problems = [], []
        for ep in candidates:  # only valid scripts become partitions; a broken one is reported, not run
            try:
                load_episode(layout, series, ep)
                ready.append(ep)
            except BibleError as e:
                problems.append(str(e))
        for p in problems:
            context.log.warning(p)
        if not ready:
            return SkipReason("; ".join(problems))
        return SensorResult(
            run_requests=[RunRequest(run_key=f"{series_id}/{ep}", partition_key=ep) for ep in ready],
            dynamic_partitions_requests=[partitions.build_add_request(ready)],
        )

    return new_episodes
