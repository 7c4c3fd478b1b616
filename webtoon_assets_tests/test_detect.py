"""Finding the characters (series.yaml ``consistency.detector``): the vision judge's boxes, parsed and
checked; crops and lettering tails that follow them; offline, the PANEL-line fallback said to be one
(and its stand-in detection quoted at list price); on the fake fal, boxes found, paid once, and a
character the model does not find keeps its PANEL-line band."""

from __future__ import annotations

import json

import pytest
from dagster import AssetKey, DagsterInstance
from PIL import Image

from webtoon_assets.consistency import character_crop
from webtoon_assets.consistency.detect import OFFLINE_NOTE, Detection, VisionDetector, panel_line_boxes, parse_boxes
from webtoon_assets.definitions import build_definitions
from webtoon_assets.gateway import Attribution
from webtoon_assets.demo import run_season
from webtoon_assets.letter import layout as letter_layout
from webtoon_assets.ledger import read_rows
from webtoon_assets.manifests import DialogueLine, PanelPlan
from webtoon_assets_tests.conftest import SAMPLE
from webtoon_assets_tests.test_consistency_gate import panels_manifest
from webtoon_assets_tests.test_trial import edit_series

JUDGE = "fal-ai/any-llm/vision"
WITH_CHARACTERS = ["p02", "p03", "p04", "p05", "p06", "p07", "p08", "p09", "p10"]  # ep01's panels with characters


# -- the answer ------------------------------------------------------------------------------------

def test_panel_line_boxes_are_equal_bands_in_the_lines_order():
    assert panel_line_boxes(["mira", "tomas"]) == {"mira": (0.0, 0.1, 0.5, 0.9), "tomas": (0.5, 0.1, 1.0, 0.9)}
    assert panel_line_boxes([]) == {}


def test_boxes_are_parsed_checked_and_the_missing_named():
    text = 'Sure:\n```json\n{"boxes": {"mira": [0.6, 0.1, 0.9, 0.95], "tomas": null}}\n```'
    assert parse_boxes(text, ["mira", "tomas"]) == ({"mira": (0.6, 0.1, 0.9, 0.95)}, ["tomas"])
    # Gemini's 0-1000 grid, and a dict form
    grid = '{"boxes": {"mira": [100, 200, 400, 900], "tomas": {"x0": 0.5, "y0": 0.1, "x1": 0.8, "y1": 0.7}}}'
    assert parse_boxes(grid, ["mira", "tomas"]) == ({"mira": (0.1, 0.2, 0.4, 0.9), "tomas": (0.5, 0.1, 0.8, 0.7)}, [])
    # not boxes: inverted, out of range, the wrong shape: not found, never guessed
    bad = '{"boxes": {"mira": [0.9, 0.1, 0.2, 0.5], "tomas": [0, 0, 2000, 1], "ana": "left"}}'
    assert parse_boxes(bad, ["mira", "tomas", "ana"]) == ({}, ["mira", "tomas", "ana"])
    for nonsense in ("they are both there", '{"score": 80}', "{not json}"):
        with pytest.raises(ValueError, match="expected JSON"):
            parse_boxes(nonsense, ["mira"])


def test_a_detection_says_what_was_found_and_what_was_assumed():
    d = Detection({"mira": (0.6, 0.1, 0.9, 0.9), "tomas": (0.5, 0.1, 1.0, 0.9)}, "vision-judge", ["tomas"])
    assert d.found == ["mira"] and d.describe() == "vision-judge; panel-line band for tomas (not found)"
    assert Detection(panel_line_boxes(["mira"]), OFFLINE_NOTE).found == []  # offline nothing was found


class _Answer:
    """What the gateway returns for a text request, as the detector reads it."""

    def __init__(self, text: str, provider: str = "fal"):
        self.text, self.row = text, type("Row", (), {"provider": provider})()


class _Judge:
    def __init__(self, text: str, provider: str = "fal"):
        self.answer, self.asked = _Answer(text, provider), []

    def generate_text(self, request):
        self.asked.append(request)
        return self.answer


def test_a_character_the_judge_does_not_find_keeps_its_band(tmp_path):
    panel = tmp_path / "p05.png"
    Image.new("RGB", (64, 48), "white").save(panel)
    judge = _Judge('{"boxes": {"mira": [0.55, 0.15, 0.95, 0.95], "tomas": null}}')
    who = Attribution(series=SAMPLE, episode="ep01", asset="panels", item="detect")
    found = VisionDetector(judge, JUDGE, {"model": "m"}, who, {"mira": "Mira", "tomas": "Tomas"}).detect(
        panel, ["mira", "tomas"], "p05")
    assert found.boxes == {"mira": (0.55, 0.15, 0.95, 0.95), "tomas": (0.5, 0.1, 1.0, 0.9)}  # tomas: his band
    assert found.found == ["mira"] and found.describe() == "vision-judge; panel-line band for tomas (not found)"
    asked, = judge.asked
    assert asked.attribution.item == "p05~detect" and asked.references[0].role == "panel"
    assert "mira: Mira; tomas: Tomas" in asked.arguments["prompt"]  # the ids, and who they are
    assert json.loads(asked.stand_in) == {"boxes": {"mira": [0.0, 0.1, 0.5, 0.9], "tomas": [0.5, 0.1, 1.0, 0.9]}}
    # offline the renderer's stand-in answer is the PANEL line, said to be one
    offline = VisionDetector(_Judge(asked.stand_in, "local"), JUDGE, {}, who, {}).detect(panel, ["mira", "tomas"], "p05")
    assert offline.source == OFFLINE_NOTE and offline.found == [] and offline.boxes == panel_line_boxes(["mira", "tomas"])
    with pytest.raises(ValueError, match="asked for boxes"):
        VisionDetector(_Judge("no idea"), JUDGE, {}, who, {}).detect(panel, ["mira"], "p05")


# -- what the boxes steer ----------------------------------------------------------------------------

def test_a_crop_follows_the_box(tmp_path):
    path = tmp_path / "panel.png"
    im = Image.new("RGB", (400, 300), "white")
    im.paste((200, 0, 0), (300, 30, 380, 150))  # the character: top right, red
    im.save(path)
    red = character_crop(path, (0.75, 0.1, 0.95, 0.5), size=32).getpixel((16, 16))
    assert red == (200, 0, 0)
    band = character_crop(path, (0.0, 0.5), size=32)  # the PANEL line's left band: no character there
    assert band.getpixel((16, 16)) == (255, 255, 255)


def plan_with(characters: list[str], speaker: str) -> PanelPlan:
    return PanelPlan(id="p05", order=5, scene=1, location="shop", shot="medium", camera="", characters=characters,
                     action="", dialogue=[DialogueLine(kind="speech", speaker=speaker, text="Shut the door, child.")],
                     captions=[], sfx=[], take=1, pace="normal", gutter=80, width="full", align="center",
                     aspect="portrait_4_3", prompt="", prompt_parts={})


def test_the_tail_points_at_the_detected_speaker():
    plan = plan_with(["mira", "tomas"], "tomas")  # the PANEL line puts tomas on the right
    assumed, = letter_layout(plan, 800, 1000).items
    assert assumed.tail[0] == 600  # the middle of the right half
    found, = letter_layout(plan, 800, 1000, {"tomas": [0.05, 0.3, 0.35, 0.95]}).items
    assert found.tail[0] == 160  # the middle of where the judge found him: on the left
    assert found.tail[1] >= int(1000 * (0.3 + 0.12 * 0.65))  # at or below his head, never above it
    assert found.box[0] < 400  # the balloon sits over him too


# -- offline: the fallback, and what detection would cost ---------------------------------------------

def test_offline_the_panel_line_stands_in_and_is_quoted(layout, tmp_path):
    edit_series(layout, **{"consistency.detector": "vision-judge"})
    (tmp_path / "d").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "d")) as inst:
        run, = run_season(inst, build_definitions(layout), layout, SAMPLE, ["ep01"])
        rows = [r for r in read_rows(layout.ledger_dir) if r.run_id == run and r.item.endswith("~detect")]
        assert sorted(r.item for r in rows) == [f"{p}~detect" for p in WITH_CHARACTERS]
        assert all(r.endpoint == JUDGE and r.provider == "local" and r.status == "generated" and r.list_usd > 0
                   and r.billed_usd == 0 for r in rows)  # an exact quote of what detection would cost
        items = {i["item"]: i for i in panels_manifest(layout)["items"]}
        assert items["p05"]["boxes"] == {"mira": [0.0, 0.1, 0.5, 0.9], "tomas": [0.5, 0.1, 1.0, 0.9]}
        assert all(items[p]["boxes_source"] == OFFLINE_NOTE and items[p]["boxes_detected"] == [] for p in WITH_CHARACTERS)
        assert items["p01"]["boxes"] == {}  # no characters
        meta = inst.get_latest_materialization_event(AssetKey([SAMPLE, "panels"])).asset_materialization.metadata
        assert meta["character_boxes"].value == OFFLINE_NOTE
        lettered = inst.get_latest_materialization_event(AssetKey([SAMPLE, "lettered_panels"])).asset_materialization
        assert lettered.metadata["tails_from_detected_boxes"].value == 0



# -- on the fake fal: found, paid once, and steering the tails ------------------------------------------

def test_on_fal_boxes_are_found_paid_once_and_steer_the_crops_and_tails(layout, tmp_path, fake_fal):
    edit_series(layout, **{"consistency.detector": "vision-judge", "consistency.scorer": "vision-judge"})
    # the judge finds tomas on the left and mira on the right, the other way round from p05's PANEL line
    fake_fal.configure(text_output='{"score": 90}',
                       detect_output=json.dumps({"boxes": {"tomas": [0.05, 0.2, 0.45, 0.95],
                                                           "mira": [0.55, 0.15, 0.95, 0.95]}}))
    (tmp_path / "d").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "d")) as inst:
        run, = run_season(inst, build_definitions(layout), layout, SAMPLE, ["ep01"])
        rows = [r for r in read_rows(layout.ledger_dir) if r.run_id == run and r.item.endswith("~detect")]
        assert sorted(r.item for r in rows) == [f"{p}~detect" for p in WITH_CHARACTERS]
        assert all(r.provider == "fal" and r.status == "generated" and r.billed_usd > 0 for r in rows)
        items = {i["item"]: i for i in panels_manifest(layout)["items"]}
        p05 = items["p05"]
        assert p05["boxes"] == {"mira": [0.55, 0.15, 0.95, 0.95], "tomas": [0.05, 0.2, 0.45, 0.95]}
        assert p05["boxes_source"] == "vision-judge" and sorted(p05["boxes_detected"]) == ["mira", "tomas"]
        # p02 shows mira alone: found where the answer says
        assert items["p02"]["boxes"] == {"mira": [0.55, 0.15, 0.95, 0.95]}
        # the judge scored the characters cut out by their boxes, not by the PANEL line's bands
        crops = {p.name.split("-", 1)[1] for p in (layout.store / "crops").glob("*.png")}
        assert {"0.550-0.150-0.950-0.950.png", "0.050-0.200-0.450-0.950.png"} <= crops
        assert "0.000-0.500.png" not in crops and "0.500-1.000.png" not in crops

        lettered = {i["item"]: i for i in json.loads(
            (layout.output_dir(SAMPLE, "ep01") / "lettered_panels.json").read_text())["items"]}
        width = p05["width"]
        tails = {b["speaker"]: b["tail"][0] for b in lettered["p05"]["lettering"] if b["speaker"]}
        assert tails["tomas"] == int(width * 0.25) and tails["mira"] == int(width * 0.75)
        assert lettered["p05"]["tails_from"] == "vision-judge"

        # a re-run pays nothing for detection: the same panel images, the same answers, from the store
        paid = fake_fal.stats()["counts"]["paid"]
        again, = run_season(inst, build_definitions(layout), layout, SAMPLE, ["ep01"])
        assert fake_fal.stats()["counts"]["paid"] == paid
        assert all(r.status == "cached" for r in read_rows(layout.ledger_dir) if r.run_id == again)
