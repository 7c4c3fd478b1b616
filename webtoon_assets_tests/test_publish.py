"""From script to a publishable episode: pacing, lettering, WEBTOON Canvas slices, the reader."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey
from PIL import Image, ImageChops

from webtoon_assets.assets.episode_strip import CHECK, limits_check
from webtoon_assets.bible import load_episode, load_series
from webtoon_assets.compose import canvas
from webtoon_assets.compose.canvas import MAX_EPISODE_BYTES, MAX_SLICE_BYTES, MAX_SLICE_HEIGHT
from webtoon_assets.definitions import build_definitions
from webtoon_assets.demo import run_season
from webtoon_assets.letter import layout
from webtoon_assets.ledger import read_rows
from webtoon_assets.manifests import PanelPlan, Slice, Strip
from webtoon_assets.paths import REPO_ROOT, DataLayout
from webtoon_assets.series import season_job_name
from webtoon_assets.storyboard import plan_storyboard
from webtoon_assets_tests.conftest import SAMPLE, produced_season

EPISODES = ("ep01", "ep02", "ep03")


@pytest.fixture(scope="module")
def season(tmp_path_factory):
    """The sample season produced offline once for this module."""
    with produced_season(tmp_path_factory.mktemp("publish")) as made:
        yield made


def manifest(layout_: DataLayout, ep: str, asset: str) -> dict:
    return json.loads((layout_.output_dir(SAMPLE, ep) / f"{asset}.json").read_text())


# -- storyboard -----------------------------------------------------------------------------------

def test_pacing_defaults_follow_the_scripts_structure():
    layout_ = DataLayout(REPO_ROOT / "data")
    series = load_series(layout_, SAMPLE)
    plans = {p.id: p for p in plan_storyboard(series, load_episode(layout_, series, "ep01"))}
    assert plans["p03"].pace == "scene" and plans["p03"].gutter == 400  # last panel before a new scene
    assert plans["p10"].pace == "pause" and plans["p10"].gutter == 200  # the episode's end
    assert plans["p02"].pace == "normal" and plans["p02"].gutter == 100
    assert plans["p04"].gutter == 200 and plans["p04"].pace == "pause"  # the writer's [gutter=200] names its pace
    assert plans["p01"].aspect == "landscape_16_9" and plans["p02"].aspect == "portrait_4_3"  # by shot
    ep2 = {p.id: p for p in plan_storyboard(series, load_episode(layout_, series, "ep02"))}
    assert ep2["p03"].width == "inset" and ep2["p03"].align == "left"  # an insert shot reads as an inset
    ep3 = {p.id: p for p in plan_storyboard(series, load_episode(layout_, series, "ep03"))}
    assert ep3["p01"].pace == "rapid" and ep3["p01"].gutter == 50  # [gutter=50] on the chase


def test_writer_overrides_every_pacing_choice(layout):
    path = layout.episodes_dir(SAMPLE) / "ep01.txt"
    path.write_text(path.read_text().replace(
        "PANEL full: mira\n", "PANEL full: mira [pace=rapid, width=inset, aspect=square, camera=low]\n", 1))
    series = load_series(layout, SAMPLE)
    p = plan_storyboard(series, load_episode(layout, series, "ep01"))[1]
    assert (p.pace, p.gutter, p.width, p.aspect, p.camera) == ("rapid", 50, "inset", "square", "low")
    assert "low-angle camera" in p.prompt and p.prompt_parts["shot"].startswith("Webtoon panel, full shot")


def test_prompts_say_where_each_part_came_from_and_never_ask_for_text():
    layout_ = DataLayout(REPO_ROOT / "data")
    series = load_series(layout_, SAMPLE)
    for ep in EPISODES:
        for p in plan_storyboard(series, load_episode(layout_, series, ep)):
            assert p.prompt == " ".join(p.prompt_parts.values())
            assert p.prompt_parts["no_text"].startswith("No text")
            for line in [*(d.text for d in p.dialogue), *p.captions, *p.sfx]:
                assert line not in p.prompt


# -- lettering ------------------------------------------------------------------------------------

def test_every_line_of_every_script_is_lettered_exactly_once(season):
    layout_, _ = season
    for ep in EPISODES:
        board = {p["id"]: p for p in manifest(layout_, ep, "storyboard")["panels"]}
        for panel in manifest(layout_, ep, "lettered_panels")["items"]:
            plan = board[panel["item"]]
            expected = sorted([("caption", c) for c in plan["captions"]]
                              + [(d["kind"], d["text"]) for d in plan["dialogue"]] + [("sfx", s) for s in plan["sfx"]])
            got = sorted((i["kind"], i["text"]) for i in panel["lettering"])
            assert got == expected, (ep, panel["item"])
            for i in panel["lettering"]:  # the wrapped lines are the text, word for word
                assert " ".join(i["lines"]).split() == i["text"].split()


def test_balloons_stay_inside_their_panel_and_never_overlap(season):
    layout_, _ = season
    for ep in EPISODES:
        for panel in manifest(layout_, ep, "lettered_panels")["items"]:
            boxes = [i["box"] for i in panel["lettering"]]
            for x0, y0, x1, y1 in boxes:
                assert 0 <= x0 < x1 <= panel["width"] and 0 <= y0 < y1 <= panel["height"]
            for i, a in enumerate(boxes):
                for b in boxes[i + 1:]:
                    assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (ep, panel["item"], a, b)
            assert panel["warnings"] == []


def test_reading_order_runs_top_left_to_bottom_right(season):
    layout_, _ = season
    for ep in EPISODES:
        for panel in manifest(layout_, ep, "lettered_panels")["items"]:
            items = sorted(panel["lettering"], key=lambda i: i["order"])
            for prev, nxt in zip(items, items[1:]):
                # each item starts no higher than the one before, and sits below it or to its right
                assert nxt["box"][1] >= prev["box"][1]
                assert nxt["box"][1] >= prev["box"][3] or nxt["box"][0] >= prev["box"][2]


def test_tails_point_at_the_speaker(season):
    layout_, _ = season
    panel = next(p for p in manifest(layout_, "ep01", "lettered_panels")["items"] if p["item"] == "p05")
    first, second = sorted(panel["lettering"], key=lambda i: i["order"])  # PANEL medium: mira, tomas
    assert (first["speaker"], second["speaker"]) == ("tomas", "mira")  # script order: Tomas speaks first
    assert first["tail"][0] > panel["width"] / 2 > second["tail"][0]  # Tomas stands right, Mira left
    assert all(i["tail"][1] > i["box"][3] for i in (first, second))  # tails hang down toward the heads


def test_the_clean_panel_is_kept_beside_the_lettered_one(season):
    layout_, _ = season
    item = manifest(layout_, "ep01", "lettered_panels")["items"][4]
    with Image.open(item["clean_path"]) as clean, Image.open(item["path"]) as lettered:
        assert clean.size == lettered.size
        assert ImageChops.difference(clean.convert("RGB"), lettered.convert("RGB")).getbbox() is not None


def test_too_much_text_is_a_warning_naming_the_panel():
    from webtoon_assets.bible.episode import DialogueLine
    words = "This is a very long speech that goes on and on about lanterns and light and the storm. " * 3
    plan = PanelPlan(id="p09", order=9, scene=1, location="x", shot="medium", camera="eye", characters=["a", "b"],
                     action="", dialogue=[DialogueLine(speaker=s, text=words) for s in "abab"], captions=[words],
                     sfx=["BOOM"], take=1, pace="normal", gutter=100, width="full", align="center", aspect="square",
                     prompt="", prompt_parts={})
    result = layout(plan, 512, 512)
    assert result.warnings and all(w.startswith("panel p09:") for w in result.warnings)
    assert len(result.items) == 6  # nothing is dropped, even when it does not fit


def test_a_text_only_change_re_letters_without_a_new_generation(instance, defs, layout):
    run_season(instance, defs, layout, SAMPLE, ["ep01"])
    generated = sum(r.status == "generated" for r in read_rows(layout.ledger_dir))
    path = layout.episodes_dir(SAMPLE) / "ep01.txt"
    path.write_text(path.read_text().replace("What light? It's pitch dark in here!", "Light? I can't see a thing!"))
    run_season(instance, build_definitions(layout), layout, SAMPLE, ["ep01"])
    rows = list(read_rows(layout.ledger_dir))
    assert sum(r.status == "generated" for r in rows) == generated  # no image made again, nothing paid
    texts = [i["text"] for p in manifest(layout, "ep01", "lettered_panels")["items"] for i in p["lettering"]]
    assert "Light? I can't see a thing!" in texts and "What light? It's pitch dark in here!" not in texts


# -- export and reader ----------------------------------------------------------------------------

def test_slices_fit_webtoon_canvas_and_are_cut_in_gutters(season):
    layout_, inst = season
    for ep in EPISODES:
        strip = Strip.model_validate(manifest(layout_, ep, "episode_strip"))
        assert strip.total_bytes <= MAX_EPISODE_BYTES and strip.cuts_through_panels == 0
        heights = 0
        for s in strip.slices:
            with Image.open(s.path) as im:
                assert im.format == "JPEG" and im.width == 800 and im.height == s.height <= MAX_SLICE_HEIGHT
            assert Path(s.path).stat().st_size == s.bytes <= MAX_SLICE_BYTES
            heights += s.height
        assert heights == strip.height
        with Image.open(strip.thumbnail) as thumb:
            assert thumb.size == (160, 151)
        assert strip.path is None and strip.full_path is None  # the whole strip only when asked (below)
        assert not (Path(strip.reader).parent / "strip_full.png").exists()
        # every cut lies in a gutter: no panel spans a slice boundary
        board = manifest(layout_, ep, "storyboard")["panels"]
        assert len(board) == strip.panels
    evaluation = inst.event_log_storage.get_latest_asset_check_execution_by_key(
        [AssetCheckKey(AssetKey([SAMPLE, "episode_strip"]), CHECK)])
    assert next(iter(evaluation.values())).status.value == "SUCCEEDED"


def test_the_whole_strip_as_png_when_asked_and_the_same_slices_either_way(season):
    layout_, inst = season
    out = layout_.output_dir(SAMPLE, "ep01")
    before = Strip.model_validate(manifest(layout_, "ep01", "episode_strip"))
    upload = [Path(s.path).read_bytes() for s in before.slices]
    job = build_definitions(layout_).resolve_job_def(season_job_name(SAMPLE))
    step = {"asset_selection": [AssetKey([SAMPLE, "episode_strip"])], "instance": inst, "partition_key": "ep01"}
    asked = {"ops": {f"{SAMPLE}__episode_strip": {"config": {"full_strips": True}}}}
    assert job.execute_in_process(run_config=asked, **step).success
    strip = Strip.model_validate(manifest(layout_, "ep01", "episode_strip"))
    assert [Path(s.path).read_bytes() for s in strip.slices] == upload  # byte for byte the same slices
    # both PNGs were streamed; each decodes to the strip drawn the naive way, whole
    board = manifest(layout_, "ep01", "storyboard")["panels"]
    lettered = {i["item"]: i for i in manifest(layout_, "ep01", "lettered_panels")["items"]}
    placed, height = canvas.lay_out([canvas.PanelIn(p["id"], Path(lettered[p["id"]]["path"]), p["gutter"], p["width"],
                                                    p["align"]) for p in board])
    scale = max(lettered[p["id"]]["width"] / q.width for p, q in zip(board, placed))
    assert (strip.path, strip.full_path) == (str(out / "strip.png"), str(out / "strip_full.png"))
    for path, at in ((strip.path, 1.0), (strip.full_path, scale)):
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width == round(800 * at) and im.height == round(strip.height * at)
            assert ImageChops.difference(im, canvas.render(placed, height, scale=at)).getbbox() is None
    # asked no more: the PNGs go (not this materialization's), the slices stay the same
    assert job.execute_in_process(**step).success
    again = Strip.model_validate(manifest(layout_, "ep01", "episode_strip"))
    assert again.path is None and again.full_path is None
    assert not (out / "strip.png").exists() and not (out / "strip_full.png").exists()
    assert [Path(s.path).read_bytes() for s in again.slices] == upload


def test_the_limits_check_fails_on_a_slice_too_tall_or_too_heavy():
    ok = Slice(path="a/001.jpg", width=800, height=1200, bytes=100)
    strip = Strip(series="s", episode="e", path="", full_path="", width=800, height=2500, panels=3,
                  slices=[ok, Slice(path="a/002.jpg", width=800, height=1300, bytes=3 * 1024 * 1024)],
                  total_bytes=21 * 1024 * 1024, jpeg_quality=90, cuts_through_panels=0, thumbnail="", reader="")
    result = limits_check(strip)
    assert not result.passed and result.severity.value == "ERROR"
    assert "002.jpg: 1300 px tall" in result.description and "over 2097152" in result.description
    assert "episode:" in result.description
    assert limits_check(strip.model_copy(update={"slices": [ok], "total_bytes": 100})).passed


def test_the_reader_scrolls_every_slice_and_the_index_lists_the_season(season):
    layout_, inst = season
    for ep in EPISODES:
        strip = Strip.model_validate(manifest(layout_, ep, "episode_strip"))
        page = Path(strip.reader).read_text()
        srcs = re.findall(r'<img src="([^"]+)"', page)
        assert [Path(strip.reader).parent / s for s in srcs] == [Path(s.path) for s in strip.slices]
        assert "index.html" in page
    index = (layout_.output_dir(SAMPLE) / "index.html").read_text()
    assert all(f"{ep}/reader.html" in index for ep in EPISODES)
    meta = inst.get_latest_materialization_event(AssetKey([SAMPLE, "episode_strip"])).asset_materialization.metadata
    assert meta["reader"].value.endswith("reader.html") and meta["preview"].value.startswith("![preview](data:image/jpeg")
