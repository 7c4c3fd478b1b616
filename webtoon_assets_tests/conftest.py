"""Shared fixtures: a private data root (a copy of the sample bible), a real Dagster instance in a
temp dir, and the project's definitions built over that root."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import yaml

import pytest
from dagster import DagsterInstance

from webtoon_assets.definitions import build_definitions
from webtoon_assets.demo import run_season
from webtoon_assets.paths import REPO_ROOT, DataLayout
from webtoon_assets_tests.fal_harness import start_fake_fal

SAMPLE = "lantern_street"


@pytest.fixture(scope="session", autouse=True)
def _dagster_home(tmp_path_factory) -> Iterator[Path]:
    """DAGSTER_HOME for the tests, set before any fixture runs: Dagster writes telemetry
    (logs/event.log, .telemetry/) beside it, even for temp instances, so it is never the
    repository's data/dagster (nor the repo root)."""
    home = tmp_path_factory.mktemp("dagster-home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("DAGSTER_HOME", str(home))
        yield home


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, _dagster_home: Path) -> None:
    # Tests choose their provider explicitly; a developer's key must never reach them.
    for var in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "FAL_ADMIN_KEY", "BFL_API_KEY", "GEMINI_API_KEY",
                "TOGETHER_API_KEY", "REPLICATE_API_TOKEN", "WEBTOON_PROVIDER", "WEBTOON_MAX_RUN_USD",
                "WEBTOON_CREDITS_PER_USD", "WEBTOON_PRICEBOOK",
                # nor their database or shared store: a test that wants PostgreSQL starts its own
                "WEBTOON_DATABASE_URL", "WEBTOON_STORE_DIR", "WEBTOON_STORE_URL", "WEBTOON_INSTANCE_CONFIG",
                "DAGSTER_PG_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DAGSTER_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("DAGSTER_HOME", str(_dagster_home))


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DataLayout:
    layout = fresh_data_root(tmp_path / "data")
    monkeypatch.setenv("WEBTOON_DATA_DIR", str(layout.root))
    return layout


@pytest.fixture
def instance(tmp_path: Path):
    (tmp_path / "dagster").mkdir()
    with DagsterInstance.local_temp(tempdir=str(tmp_path / "dagster")) as inst:
        yield inst


@pytest.fixture
def defs(layout: DataLayout):
    return build_definitions(layout)


@pytest.fixture(scope="session")
def fake_fal_server(tmp_path_factory):
    fake = start_fake_fal(tmp_path_factory.mktemp("fake-fal"))
    yield fake
    fake.stop()


@pytest.fixture
def fake_fal(fake_fal_server, monkeypatch):
    """The fake, reset, with this process pointed at it through the real fal-client."""
    fake_fal_server.reset()
    for k, v in {**fake_fal_server.env(), "WEBTOON_FAL_POLL_SECONDS": "0.02", "WEBTOON_RETRY_BASE_SECONDS": "0.01",
                 "WEBTOON_FAL_REFERENCES": "inline"}.items():
        monkeypatch.setenv(k, v)
    return fake_fal_server


def fresh_data_root(root: Path) -> DataLayout:
    """A data root holding a copy of the sample bible and the price book."""
    shutil.copytree(REPO_ROOT / "data" / "series", root / "series")
    shutil.copy(REPO_ROOT / "data" / "pricebook.yaml", root / "pricebook.yaml")
    return DataLayout(root)


@contextmanager
def produced_season(base: Path, planned: int | None = None):
    """The sample season produced offline in ``base``: yields (layout, instance). Module fixtures
    use it to produce once and share."""
    layout = fresh_data_root(base / "data")
    if planned is not None:
        path = layout.series_dir(SAMPLE) / "series.yaml"
        data = yaml.safe_load(path.read_text())
        data["planned_episodes"] = planned
        path.write_text(yaml.safe_dump(data))
    (base / "dagster").mkdir()
    with DagsterInstance.local_temp(tempdir=str(base / "dagster")) as inst:
        run_season(inst, build_definitions(layout), layout, SAMPLE)
        yield layout, inst


def store_files(layout: DataLayout) -> set[str]:
    return {p.name for p in (layout.store / "images").rglob("*.png")}


def cost_sql(layout: DataLayout, query: str) -> list[tuple]:
    """A query's rows from the cost tables, read-only."""
    import duckdb

    con = duckdb.connect(str(layout.duckdb_path), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def expect_error(fn, *fragments: str):
    """The BibleError ``fn`` raises, holding every fragment."""
    from webtoon_assets.bible import BibleError

    with pytest.raises(BibleError) as info:
        fn()
    text = str(info.value)
    for f in fragments:
        assert f in text, f"{f!r} not in:\n{text}"
    return info.value
