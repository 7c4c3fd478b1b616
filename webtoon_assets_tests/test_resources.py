"""The resources assets call: the provider as a resource of its own (settings from the launchpad,
else the environment, else the defaults), and refusals that fail the step cleanly."""

from __future__ import annotations

import pytest
from dagster import AssetKey, DagsterInstance

from webtoon_assets.definitions import build_definitions
from webtoon_assets.demo import register_episodes
from webtoon_assets.resources import FalProviderResource, LocalProviderResource, provider_resource
from webtoon_assets.resources.providers import ProviderConfigError
from webtoon_assets_tests.conftest import SAMPLE


def kind(resource) -> type:
    return getattr(resource, "resource_cls", type(resource))  # fal's is configured at launch (a partial)


def test_the_provider_is_chosen_as_a_resource(monkeypatch):
    assert kind(provider_resource()) is LocalProviderResource
    monkeypatch.setenv("FAL_KEY", "k")
    assert kind(provider_resource()) is FalProviderResource
    monkeypatch.setenv("WEBTOON_PROVIDER", "local")
    assert kind(provider_resource()) is LocalProviderResource
    with pytest.raises(ProviderConfigError, match="unknown provider 'replicate'"):
        provider_resource("replicate")


def test_unset_fal_settings_come_from_the_environment_and_set_ones_win(monkeypatch):
    monkeypatch.setenv("WEBTOON_FAL_CONCURRENCY", "6")
    monkeypatch.setenv("WEBTOON_FAL_TIMEOUT_SECONDS", "90")
    for variable in ("FAL_KEY", "BFL_API_KEY", "GEMINI_API_KEY", "TOGETHER_API_KEY", "REPLICATE_API_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    assert FalProviderResource().settings() == {"concurrency": 6, "queue_ahead": 1, "references": "upload",
                                                "timeout_seconds": 90, "platforms": "none"}
    assert FalProviderResource(concurrency=12).settings()["concurrency"] == 12
    assert FalProviderResource(concurrency=12).settings()["queue_ahead"] == 3  # a quarter, by default
    monkeypatch.setenv("WEBTOON_FAL_QUEUE_AHEAD", "0")
    assert FalProviderResource(concurrency=12).settings()["queue_ahead"] == 0
    with pytest.raises(ProviderConfigError, match="concurrency"):
        FalProviderResource(concurrency=99).settings()  # fal allows at most 40 in flight


def test_launchpad_config_reaches_the_provider_the_gateway_uses(layout, instance, fake_fal, monkeypatch):
    """A run's `resources: provider: config:` is what the gateway's nested provider uses."""
    monkeypatch.setenv("WEBTOON_FAL_CONCURRENCY", "2")
    defs = build_definitions(layout, provider="fal")
    register_episodes(instance, layout, SAMPLE)
    job = defs.resolve_job_def(f"{SAMPLE}__season")
    result = job.execute_in_process(
        instance=instance, partition_key="ep01", asset_selection=[AssetKey([SAMPLE, "storyboard"]),
                                                                  AssetKey([SAMPLE, "style_sheet"])],
        run_config={"resources": {"provider": {"config": {"concurrency": 5}}}})
    assert result.success
    meta = instance.get_latest_materialization_event(AssetKey([SAMPLE, "style_sheet"])).asset_materialization.metadata
    assert meta["provider"].value == "fal" and meta["provider_concurrency"].value == 5


def test_a_provider_that_cannot_start_fails_the_step_without_a_traceback(layout, instance, monkeypatch):
    monkeypatch.setenv("WEBTOON_PROVIDER", "fal")  # and no FAL_KEY
    defs = build_definitions(layout)
    register_episodes(instance, layout, SAMPLE)
    result = defs.resolve_job_def(f"{SAMPLE}__season").execute_in_process(
        instance=instance, partition_key="ep01", asset_selection=[AssetKey([SAMPLE, "storyboard"])],
        raise_on_error=False)
    assert not result.success
    failure, = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failure.event_specific_data.error
    assert "need a key (FAL_KEY" in error.message and error.cls_name == "Failure"
