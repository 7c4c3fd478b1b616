"""The multi-machine profile (deploy/postgres/dagster.yaml): two DAGSTER_HOMEs written from it, as
two machines would, share one PostgreSQL database: a run and its materialization made through one
are seen through the other, and both load the run queue and the pool limits from the profile."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterRunStatus, asset, materialize

from webtoon_assets.instance import (CONFIG_ENV, PROJECT_CONFIG, check_postgres_driver, open_instance, prepare_home,
                                     project_config)
from webtoon_assets.paths import REPO_ROOT
from webtoon_assets_tests.pg_harness import PgServer, dagster_url, postgres  # noqa: F401

PROFILE = REPO_ROOT / "deploy" / "postgres" / "dagster.yaml"


@asset(pool="image_generation")
def pg_probe() -> int:
    return 42


def test_instance_config_env_chooses_the_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert project_config() == PROJECT_CONFIG
    monkeypatch.setenv(CONFIG_ENV, "deploy/postgres/dagster.yaml")  # relative to the repository root
    assert project_config() == PROFILE.resolve()
    monkeypatch.setenv(CONFIG_ENV, str(PROFILE))
    assert project_config() == PROFILE.resolve()
    monkeypatch.setenv(CONFIG_ENV, "deploy/nowhere.yaml")
    with pytest.raises(FileNotFoundError, match=CONFIG_ENV):
        prepare_home(tmp_path / "home")


def test_a_postgres_url_must_name_its_driver(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = prepare_home(tmp_path / "home", source=PROFILE, base=tmp_path)
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    with pytest.raises(ValueError, match="DAGSTER_PG_URL is not set"):
        check_postgres_driver(home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql://u:secret@db:5432/dagster")
    with pytest.raises(ValueError, match="name the driver") as refused:
        check_postgres_driver(home / "dagster.yaml")
    assert "secret" not in str(refused.value)
    monkeypatch.setenv("DAGSTER_PG_URL", dagster_url("postgresql://u:secret@db:5432/dagster"))
    check_postgres_driver(home / "dagster.yaml")
    check_postgres_driver(prepare_home(tmp_path / "sqlite", source=PROJECT_CONFIG, base=tmp_path) / "dagster.yaml")


def test_two_machines_share_one_postgres_instance(postgres: PgServer, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
                                                  tmp_path: Path) -> None:
    url = dagster_url(postgres.create_database(f"dagster_{uuid.uuid4().hex[:8]}"))
    monkeypatch.setenv("DAGSTER_PG_URL", url)
    monkeypatch.setenv(CONFIG_ENV, "deploy/postgres/dagster.yaml")
    # Each "machine": its own checkout root (for the local files) and its own DAGSTER_HOME.
    homes = {m: prepare_home(tmp_path / m / "dagster_home", base=tmp_path / m) for m in ("a", "b")}

    written = yaml.safe_load((homes["a"] / "dagster.yaml").read_text())
    assert written["storage"] == {"postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}  # no URL in the file
    assert written["compute_logs"]["config"]["base_dir"] == str(tmp_path / "a" / "data" / "dagster" / "compute_logs")
    assert written["local_artifact_storage"]["config"]["base_dir"] == str(tmp_path / "a" / "data" / "dagster")

    with open_instance(homes["a"]) as a:
        assert type(a.run_storage).__name__ == "PostgresRunStorage"
        assert type(a.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(a.schedule_storage).__name__ == "PostgresScheduleStorage"
        result = materialize([pg_probe], instance=a, tags={"machine": "a"})
        assert result.success
        run_id = result.run_id

    with open_instance(homes["b"]) as b:
        assert type(b.run_storage).__name__ == "PostgresRunStorage"
        run = b.get_run_by_id(run_id)
        assert run is not None and run.status == DagsterRunStatus.SUCCESS and run.tags["machine"] == "a"
        event = b.get_latest_materialization_event(AssetKey("pg_probe"))
        assert event is not None and event.run_id == run_id
        # The pool's slots are rows in the shared database: made by a's run, seen by b.
        assert b.event_log_storage.get_concurrency_info("image_generation").slot_count == 2
        # The profile's queue, pools and launcher (read from the config, the launcher not started).
        assert type(b.run_coordinator).__name__ == "QueuedRunCoordinator"
        concurrency = b.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 2
        assert concurrency.run_queue_config is not None and concurrency.run_queue_config.max_concurrent_runs == 8
        launcher = b.get_ref().run_launcher_data
        assert (launcher.module_name, launcher.class_name) == ("webtoon_assets.runs", "LocalRunLauncher")
        assert b.root_directory != str(homes["a"])
