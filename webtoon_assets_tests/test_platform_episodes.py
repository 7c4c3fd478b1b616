"""A whole episode through each platform's provider (BFL, Gemini, Together, Replicate) against the
loopback fake, in Dagster: one submission per distinct request, the ledger billing what the
platform reports, no key anywhere, and a re-run that pays nothing."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance

from webtoon_assets.definitions import build_definitions
from webtoon_assets.demo import run_season
from webtoon_assets.ledger import read_rows
from webtoon_assets_tests.conftest import SAMPLE, fresh_data_root
from webtoon_assets_tests.fake_platforms import TEST_KEYS
from webtoon_assets_tests.platform_harness import start_fake_platforms

# each platform's models for the sample series: sheets and plates from one endpoint, panels from one
# that takes references where the platform has one
MODELS = {
    "bfl": ("bfl/flux-2-klein-4b", "bfl/flux-2-klein-9b"),
    "gemini": ("gemini/gemini-3-pro-image", "gemini/gemini-3-pro-image"),
    "together": ("together/flux-1-schnell-free", "together/flux-1-schnell-free"),
    "replicate": ("replicate/black-forest-labs/flux-schnell", "replicate/black-forest-labs/flux-schnell"),
}


@pytest.fixture(scope="module")
def platforms(tmp_path_factory):
    fake = start_fake_platforms(tmp_path_factory.mktemp("fake-platforms"))
    yield fake
    fake.stop()


def use_platform(root: Path, platform: str):
    layout = fresh_data_root(root)
    path = layout.series_dir(SAMPLE) / "series.yaml"
    data = yaml.safe_load(path.read_text())
    sheets, panels = MODELS[platform]
    for family in ("style_sheet", "character_sheets", "backgrounds"):
        data["models"][family]["endpoint"] = sheets
    data["models"]["panels"]["endpoint"] = panels
    data["budget"]["per_episode_usd"] = 5  # Gemini: 15 images at $0.134
    path.write_text(yaml.safe_dump(data))
    return layout


def run_episode(layout, dagster_dir: Path) -> None:
    dagster_dir.mkdir(exist_ok=True)
    with DagsterInstance.local_temp(str(dagster_dir)) as inst:
        run_season(inst, build_definitions(layout), layout, SAMPLE, ["ep01"])


@pytest.mark.parametrize("platform", list(MODELS))
def test_an_episode_through_each_platform_pays_once_what_the_platform_reports(platform, platforms, tmp_path,
                                                                              monkeypatch, capfd):
    platforms.reset(latency=0.02)
    for k, v in {**platforms.env(), "WEBTOON_RETRY_BASE_SECONDS": "0.01",
                 f"WEBTOON_{platform.upper()}_POLL_SECONDS": "0.02"}.items():
        monkeypatch.setenv(k, v)
    layout = use_platform(tmp_path / "data", platform)
    run_episode(layout, tmp_path / "dagster")

    rows = list(read_rows(layout.ledger_dir))
    made = [r for r in rows if r.status == "generated"]
    assert len(made) == 15 and {r.provider for r in made} == {platform}  # style, 2 sheets, 2 plates, 10 panels
    stats = platforms.stats(platform)
    assert stats["submissions"] == len(stats["by_body"]) == len(made) and stats["max_same_body"] == 1
    billed = sum((r.billed_usd for r in rows), Decimal(0))
    assert billed == Decimal(stats["billed_usd"])  # what the platform says it charged, to the cent's fraction
    if platform == "bfl":  # BFL's own cost is the bill; the price book's quote is the list price, and agrees
        assert all(r.billed_usd == r.list_usd > 0 for r in made)
        panels = [r for r in made if r.asset == "panels"]
        assert all(r.endpoint == "bfl/flux-2-klein-9b" and 1 <= len(r.inputs) <= 4 for r in panels)
    elif platform == "together":
        assert billed == 0 and all(r.list_usd == 0 for r in made)
    else:
        assert all(r.billed_usd == r.list_usd > 0 for r in made)

    platforms.reset(latency=0.02)
    run_episode(layout, tmp_path / "dagster2")  # a re-run, even on a fresh Dagster instance
    again = list(read_rows(layout.ledger_dir))[len(rows):]
    assert platforms.stats(platform)["submissions"] == 0
    assert again and {r.status for r in again} == {"cached"} and sum(r.billed_usd for r in again) == 0

    out, err = capfd.readouterr()
    keys = [k.encode() for k in TEST_KEYS.values()]
    assert not any(k in (out + err).encode() for k in keys)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(k in data for k in keys), f"a key in {path}"
