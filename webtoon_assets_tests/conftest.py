"""Shared fixtures: a private data root (a copy of the sample bible), a real Dagster instance in a
temp dir, and the project's definitions built over that root."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dagster import DagsterInstance

from webtoon_assets.definitions import build_definitions
from webtoon_assets.paths import REPO_ROOT, DataLayout
from webtoon_assets_tests.fal_harness import start_fake_fal

SAMPLE = "lantern_street"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests choose their provider explicitly; a developer's key must never reach them.
    for var in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "WEBTOON_PROVIDER", "WEBTOON_MAX_RUN_USD",
                "WEBTOON_CREDITS_PER_USD", "WEBTOON_PRICEBOOK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DAGSTER_DISABLE_TELEMETRY", "1")


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DataLayout:
    root = tmp_path / "data"
    shutil.copytree(REPO_ROOT / "data" / "series", root / "series")
    shutil.copy(REPO_ROOT / "data" / "pricebook.yaml", root / "pricebook.yaml")
    monkeypatch.setenv("WEBTOON_DATA_DIR", str(root))
    return DataLayout(root)


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


def store_files(layout: DataLayout) -> set[str]:
    return {p.name for p in (layout.store / "images").rglob("*.png")}
