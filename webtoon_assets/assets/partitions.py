"""Episodes are dynamic partitions, one set per series, keyed by episode id."""

from __future__ import annotations

from typing import Any, Callable

from dagster import DynamicPartitionsDefinition, asset


def episode_partitions(series_id: str) -> DynamicPartitionsDefinition:
    return DynamicPartitionsDefinition(name=f"{series_id}__episodes")


# Steps that call a paid model share this pool: dagster.yaml caps how many run at once across
# runs (each step also caps its own requests in flight with WEBTOON_FAL_CONCURRENCY).
GENERATION_POOL = "image_generation"


def episode_asset(series_id: str, partitions: DynamicPartitionsDefinition, **kwargs: Any) -> Callable:
    """@asset with what every episode asset of a series shares."""
    return asset(key_prefix=[series_id], partitions_def=partitions, group_name=series_id,
                 io_manager_key="manifests", **kwargs)
