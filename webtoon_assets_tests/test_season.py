"""The sample season end to end on a real (temporary) Dagster instance with the offline provider."""

from __future__ import annotations

import json

from dagster import AssetKey
from PIL import Image

from webtoon_assets.demo import run_season
from webtoon_assets_tests.conftest import SAMPLE, store_files


def manifest(layout, episode: str, asset: str) -> dict:
    return json.loads((layout.output_dir(SAMPLE, episode) / f"{asset}.json").read_text())


def statuses(layout, episode: str, asset: str) -> dict[str, str]:
    return {i["item"]: i["status"] for i in manifest(layout, episode, asset)["items"]}


def test_sample_season_materializes_end_to_end(instance, defs, layout):
    run_ids = run_season(instance, defs, layout, SAMPLE)
    assert len(run_ids) == 3
    assert sorted(instance.get_dynamic_partitions(f"{SAMPLE}__episodes")) == ["ep01", "ep02", "ep03"]

    for ep in ("ep01", "ep02", "ep03"):
        board = manifest(layout, ep, "storyboard")
        assert 8 <= len(board["panels"]) <= 15
        panels = manifest(layout, ep, "panels")["items"]
        assert [p["item"] for p in panels] == [p["id"] for p in board["panels"]]
        strip = manifest(layout, ep, "episode_strip")
        heights = []
        for s in strip["slices"]:  # the upload; the whole strip as PNG only when asked (full_strips)
            with Image.open(s["path"]) as im:
                assert im.width == 800
                heights.append(im.height)
        assert sum(heights) == strip["height"] and strip["path"] is None
        # every materialization is recorded on the instance, for the UI
        for asset in ("storyboard", "style_sheet", "character_sheets", "backgrounds", "panels", "episode_strip"):
            event = instance.get_latest_materialization_event(AssetKey([SAMPLE, asset]))
            assert event is not None

    # Reuse: episode 2 makes only what it introduces (Juno, the market); episode 3 the roof.
    assert statuses(layout, "ep01", "character_sheets") == {"mira": "generated", "tomas": "generated"}
    assert statuses(layout, "ep02", "character_sheets") == {"mira": "cached", "tomas": "cached", "juno": "generated"}
    assert statuses(layout, "ep02", "style_sheet") == {"style": "cached"}
    assert statuses(layout, "ep03", "backgrounds") == {"rain_alley": "cached", "clocktower_roof": "generated"}


def test_panels_are_conditioned_on_their_references(instance, defs, layout):
    run_season(instance, defs, layout, SAMPLE, ["ep01"])
    sheets = {i["item"]: i for i in manifest(layout, "ep01", "character_sheets")["items"]}
    board = {p["id"]: p for p in manifest(layout, "ep01", "storyboard")["panels"]}
    for panel in manifest(layout, "ep01", "panels")["items"]:
        plan = board[panel["item"]]
        expected = [f"character:{c}" for c in plan["characters"]] + [f"background:{plan['location']}", "style"]
        assert panel["references"] == expected[:4]
        record = json.loads((layout.store / "records" / panel["key"][:2] / f"{panel['key']}.json").read_text())
        sent = {r["role"]: r["sha256"] for r in record["references"]}
        for c in plan["characters"][:4]:
            assert sent[f"character:{c}"] == sheets[c]["sha256"]
        assert "speech" not in plan["prompt"].lower() or "no speech balloons" in plan["prompt"].lower()
        for line in plan["dialogue"]:
            assert line["text"] not in plan["prompt"]  # never ask the model to draw the lettering


def test_rematerializing_an_episode_makes_no_new_images(instance, defs, layout):
    run_season(instance, defs, layout, SAMPLE, ["ep01"])
    before = store_files(layout)
    run_season(instance, defs, layout, SAMPLE, ["ep01"])
    assert store_files(layout) == before
    for asset in ("style_sheet", "character_sheets", "backgrounds", "panels"):
        assert set(statuses(layout, "ep01", asset).values()) == {"cached"}
    event = instance.get_latest_materialization_event(AssetKey([SAMPLE, "panels"]))
    meta = event.asset_materialization.metadata
    assert meta["generations"].value == 0 and meta["cache_hits"].value == meta["images"].value == 10
    assert meta["spent_usd"].value == 0 and meta["quote_usd"].value == 0 and meta["saved_usd"].value > 0
    # the episode to date is unchanged by the re-run: plotted by partition, it still shows what ep01 cost
    assert meta["episode_spent_usd"].value == 0 and meta["episode_quote_usd"].value == 0.24


def test_a_new_take_makes_a_new_version_and_keeps_the_old(instance, defs, layout):
    run_season(instance, defs, layout, SAMPLE, ["ep01"])
    old = {i["item"]: i["key"] for i in manifest(layout, "ep01", "panels")["items"]}
    script = layout.episodes_dir(SAMPLE) / "ep01.txt"
    script.write_text(script.read_text().replace("PANEL close-up: tomas", "PANEL close-up: tomas [take=2]"))
    run_season(instance, defs, layout, SAMPLE, ["ep01"])
    now = statuses(layout, "ep01", "panels")
    assert [k for k, s in now.items() if s == "generated"] == ["p06"]
    new_key = {i["item"]: i["key"] for i in manifest(layout, "ep01", "panels")["items"]}["p06"]
    assert new_key != old["p06"]
    assert (layout.store / "images" / old["p06"][:2] / f"{old['p06']}.png").is_file()


def test_materialization_metadata_shows_what_was_made(instance, defs, layout):
    [run_id] = run_season(instance, defs, layout, SAMPLE, ["ep01"])
    meta = instance.get_latest_materialization_event(
        AssetKey([SAMPLE, "character_sheets"])).asset_materialization.metadata
    assert meta["images"].value == 2
    assert meta["preview"].value.startswith("![preview](data:image/jpeg;base64,")
    assert "mira" in meta["items"].value and "fal-ai/flux-2/flash" in meta["items"].value
    panels = [i["item"] for i in manifest(layout, "ep01", "panels")["items"]]
    assert panels == [p["id"] for p in manifest(layout, "ep01", "storyboard")["panels"]]  # storyboard order
    # progress, not a log line (an event-log row) per image: each item is in the table above
    lines = [str(e.user_message) for e in instance.all_logs(run_id) if str(e.user_message).startswith("panels ")]
    n = len(panels)
    assert len(lines) == 1 and lines[0].startswith(f"panels ep01 {n}/{n}: {n} made ($0 billed, list $")
    assert lines[0].endswith("0 from the store")


def test_a_damaged_store_is_mended_on_the_next_run_without_paying_again(instance, defs, layout):
    """Issue 9: a truncated image in the store used to be served as a hit, then every run died with
    `OSError: image file is truncated`, naming no file."""
    from webtoon_assets.ledger import read_rows
    run_season(instance, defs, layout, SAMPLE, ["ep01"])
    sheet = manifest(layout, "ep01", "character_sheets")["items"][0]
    panel = manifest(layout, "ep01", "panels")["items"][3]
    plate = manifest(layout, "ep01", "backgrounds")["items"][0]
    with open(sheet["store_path"], "r+b") as f:
        f.truncate(1000)
    with open(panel["store_path"], "r+b") as f:
        f.seek(200)
        f.write(b"\0" * 16)
    (layout.store / "records" / plate["key"][:2] / f"{plate['key']}.json").unlink()
    made_before = [r for r in read_rows(layout.ledger_dir) if r.status == "generated"]
    run_season(instance, defs, layout, SAMPLE, ["ep01"])
    assert [r for r in read_rows(layout.ledger_dir) if r.status == "generated"] == made_before  # nothing re-paid
    assert manifest(layout, "ep01", "character_sheets")["items"][0]["sha256"] == sheet["sha256"]
    assert len(list((layout.store / "quarantine").glob("*.png"))) == 2
    notes = [r.note for r in read_rows(layout.ledger_dir) if r.note]
    assert sum("quarantined" in n for n in notes) == 2 and sum("rebuilt" in n for n in notes) == 1
    run_id = instance.get_runs(limit=1)[0].run_id  # the run's log names the quarantined files
    logged = [str(e.user_message) for e in instance.all_logs(run_id) if "quarantined at" in str(e.user_message)]
    assert len(logged) == 2 and all(str(layout.store / "quarantine") in m for m in logged)

