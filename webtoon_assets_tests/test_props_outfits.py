"""Props and outfits (issue 13): objects that recur get a sheet of their own, made once and reused; a
character's outfits each get a sheet, chosen per scene or panel. Bad names are refused with the file,
line and field; panels send the right sheets, in priority order; the pre-flight quote counts them; the
fake fal is paid once for each distinct request."""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from dagster import DagsterInstance

from webtoon_assets.bible import BibleError, Series, load_episode, load_series
from webtoon_assets.cli import main
from webtoon_assets.definitions import build_definitions
from webtoon_assets.demo import run_season
from webtoon_assets.ledger import read_rows
from webtoon_assets.manifests import ImageItem, Storyboard
from webtoon_assets.paths import REPO_ROOT, DataLayout
from webtoon_assets.recipes import character_request, panel_references, prop_request
from webtoon_assets.storyboard import plan_storyboard
from webtoon_assets_tests.conftest import SAMPLE, expect_error, fresh_data_root

COURIER = "oversized teal rain jacket, satchel full of letters, red scarf, scuffed boots"  # mira's sample outfit
APRON = "a leather apron over a grey work shirt, sleeves rolled, glue on her fingers"
LETTER_LOOK = "a rain-soaked cream envelope, red wax seal, the address smudged, a warm glow at its edges"
PROPS_YAML = f"""
props:
  letter:
    name: The glowing letter
    look: {LETTER_LOOK}
    palette: ["#f7e1a0", "#c8553d"]
  bell:
    name: Juno's bell
    look: a tiny brass bell on a red string, dented on one side
    palette: ["#e9c46a", "#c8553d"]
"""


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def line_of(path: Path, fragment: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), start=1) if fragment in line)


def dress(layout: DataLayout) -> DataLayout:
    """The sample with two props and Mira's sample outfit moved into ``outfits:`` beside an apron;
    ep01 shows the letter and ends with Mira in the apron; ep02's shop scene is in the apron (one
    panel back in the courier outfit) and its market shows the letter again."""
    series = layout.series_dir(SAMPLE) / "series.yaml"
    replace(series, f"    outfit: {COURIER}\n",
            f"    outfits:\n      courier: {COURIER}\n      apron: {APRON}\n")
    series.write_text(series.read_text() + PROPS_YAML)
    ep01, ep02 = (layout.episodes_dir(SAMPLE) / f"{e}.txt" for e in ("ep01", "ep02"))
    replace(ep01, "PANEL close-up: mira\nMira squints", "PANEL close-up: mira [props=letter]\nMira squints")
    replace(ep01, "PANEL over-shoulder: mira, tomas", "PANEL over-shoulder: mira, tomas [props=The glowing letter]")
    replace(ep01, "PANEL medium: tomas, mira", "PANEL medium: tomas, mira [outfit=mira:apron]")
    replace(ep02, "SCENE lantern_shop: Morning", "SCENE lantern_shop [outfit=mira:apron]: Morning")
    replace(ep02, "PANEL close-up: mira\nMira blows", "PANEL close-up: mira [outfit=mira:courier]\nMira blows")
    replace(ep02, "PANEL medium: mira, juno\nA stall", "PANEL medium: mira, juno [props=letter, bell]\nA stall")
    return layout


@pytest.fixture
def dressed(layout) -> DataLayout:
    return dress(layout)


def board(series: Series, layout: DataLayout, episode: str) -> Storyboard:
    ep = load_episode(layout, series, episode)
    return Storyboard(series=series.id, episode=episode, title=ep.title, panels=plan_storyboard(series, ep))


# -- the bible ----------------------------------------------------------------------------------------

def test_the_sample_has_no_props_and_one_outfit_each(layout):
    series = load_series(layout, SAMPLE)
    assert series.props == {}
    mira = series.characters["mira"]
    assert mira.wardrobe() == {"default": COURIER} and mira.default_outfit_id == "default"
    assert series.models.prop_sheets == series.models.character_sheets  # the same default family


@pytest.mark.parametrize("old, new, at, fragments", [
    (f"      apron: {APRON}\n", f"      apron: {APRON}\n    default_outfit: tuxedo\n", "  mira:",
     ["characters.mira", "default_outfit: unknown outfit 'tuxedo'", "expected one of ['courier', 'apron']"]),
    ("    outfits:\n", f"    outfit: {COURIER}\n    outfits:\n", "  mira:",
     ["characters.mira", "either outfit: (one outfit) or outfits:", "not both"]),
    ("    palette: [\"#f7e1a0\", \"#c8553d\"]\n  bell:", "    palette: [\"gold\"]\n  bell:", '["gold"]',
     ["props.letter.palette.0", "expected a colour as '#rrggbb'", "'gold'"]),
    ("    look: a tiny brass bell", "    shape: a tiny brass bell", "shape:", ["props.bell.shape", "Extra inputs"]),
], ids=["unknown-default-outfit", "outfit-and-outfits", "bad-prop-colour", "unknown-prop-field"])
def test_invalid_props_and_outfits_in_series_yaml(dressed, old, new, at, fragments):
    """Each problem names its line: a character's own (for what is wrong across its fields), else the field's."""
    path = dressed.series_dir(SAMPLE) / "series.yaml"
    replace(path, old, new)
    err = expect_error(lambda: load_series(dressed, SAMPLE), "series.yaml", f"line {line_of(path, at)}: ",
                       *fragments)
    assert err.path.endswith("lantern_street/series.yaml")


def test_a_character_without_any_outfit_is_refused_with_its_line(layout):
    path = layout.series_dir(SAMPLE) / "series.yaml"
    replace(path, f"    outfit: {COURIER}\n", "")
    expect_error(lambda: load_series(layout, SAMPLE), f"line {line_of(path, '  mira:')}: characters.mira",
                 "expected outfit: (what the character wears) or outfits:")


SCRIPT_CASES = {
    "unknown-prop": ("PANEL full: mira\n", "PANEL full: mira [props=letter, sword]\n",
                     ["panel.props", "unknown prop 'sword'", "expected one of ['bell', 'letter']"]),
    "empty-props": ("PANEL full: mira\n", "PANEL full: mira [props=]\n",
                    ["panel option 'props='", "props expects prop ids or names"]),
    "unknown-outfit": ("PANEL full: mira\n", "PANEL full: mira [outfit=mira:tuxedo]\n",
                       ["panel.outfit", "unknown outfit 'tuxedo' for mira", "expected one of ['courier', 'apron']"]),
    "outfit-without-outfit": ("PANEL full: mira\n", "PANEL full: mira [outfit=mira]\n",
                              ["panel.outfit", "expected character:outfit (e.g. mira:raincoat), got 'mira'"]),
    "outfit-semicolons": ("PANEL medium: mira, tomas\n",
                          "PANEL medium: mira, tomas [outfit=mira:apron;tomas:default]\n", ["panel.outfit", "got 'mira:apron;tomas:default'", "separated by commas"]),
    "outfit-not-in-panel": ("PANEL full: mira\n", "PANEL full: mira [outfit=tomas:default]\n",
                            ["panel.outfit", "tomas is not in the PANEL line", "a scene's outfit=..."]),
    "outfit-twice": ("PANEL full: mira\n", "PANEL full: mira [outfit=mira:apron, mira:courier]\n",
                     ["panel.outfit", "mira's outfit is given twice"]),
    "outfit-unknown-character": ("PANEL full: mira\n", "PANEL full: mira [outfit=bob:apron]\n",
                                 ["panel.outfit", "unknown character 'bob'"]),
    "scene-unknown-outfit": ("SCENE rain_alley: Night.", "SCENE rain_alley [outfit=mira:tuxedo]: Night.",
                             ["scene.outfit", "unknown outfit 'tuxedo' for mira"]),
    "scene-unknown-option": ("SCENE rain_alley: Night.", "SCENE rain_alley [props=letter]: Night.",
                             ["scene option 'props=letter'", "expected one of ['outfit']"]),
    "unknown-panel-option": ("PANEL full: mira\n", "PANEL full: mira [costume=apron]\n",
                             ["panel option 'costume=apron'", "'camera', 'props', 'outfit']"]),
}


@pytest.mark.parametrize("case", SCRIPT_CASES)
def test_invalid_props_and_outfits_in_a_script(dressed, case):
    old, new, fragments = SCRIPT_CASES[case]
    path = dressed.episodes_dir(SAMPLE) / "ep01.txt"
    replace(path, old, new)
    series = load_series(dressed, SAMPLE)
    line = line_of(path, new.strip()[:24])
    err = expect_error(lambda: load_episode(dressed, series, "ep01"), "ep01.txt", f"line {line}: ", *fragments)
    assert err.path.endswith("episodes/ep01.txt")


def test_a_prop_in_a_series_without_props_says_where_to_add_it(layout):
    path = layout.episodes_dir(SAMPLE) / "ep01.txt"
    replace(path, "PANEL full: mira\n", "PANEL full: mira [props=letter]\n")
    expect_error(lambda: load_episode(layout, load_series(layout, SAMPLE), "ep01"), "ep01.txt",
                 f"line {line_of(path, '[props=letter]')}: panel.props: unknown prop 'letter'",
                 "add it under props: in series.yaml")


def test_list_options_take_commas_names_and_other_options(dressed):
    path = dressed.episodes_dir(SAMPLE) / "ep01.txt"
    replace(path, "PANEL medium: mira, tomas\n",
            "PANEL medium: mira, tomas [take=2, props=bell, The Glowing Letter, bell, outfit=mira:apron, "
            "Tomas:default, camera=low]\n")
    episode = load_episode(dressed, load_series(dressed, SAMPLE), "ep01")
    panel = next(p for p in episode.panels if p.take == 2)
    assert panel.props == ["bell", "letter"] and panel.camera == "low"
    assert panel.outfits == {"mira": "apron", "tomas": "default"}
    assert episode.props() == ["letter", "bell"]


# -- the storyboard and the requests -----------------------------------------------------------------

def test_outfits_panel_over_scene_over_default_and_the_prompt_says_what_is_worn(dressed):
    series = load_series(dressed, SAMPLE)
    b1, b2 = board(series, dressed, "ep01"), board(series, dressed, "ep02")
    last = b1.panels[-1]
    assert last.outfits == {"mira": "apron"} and last.sheet("mira") == "mira@apron" and last.sheet("tomas") == "tomas"
    assert f"Mira: {series.characters['mira'].look}; wearing {APRON}" in last.prompt_parts["characters"]
    assert COURIER not in last.prompt
    assert [(p.id, p.props) for p in b1.panels if p.props] == [("p03", ["letter"]), ("p07", ["letter"])]
    assert b1.panels[2].prompt_parts["props"] == (f"Props: The glowing letter: {LETTER_LOOK}. "
                                                  "Keep each prop exactly as in its reference sheet.")
    assert list(b1.panels[2].prompt_parts) == ["shot", "setting", "action", "characters", "props", "style", "no_text"]
    assert "props" not in b1.panels[0].prompt_parts
    # ep02: the shop scene is in the apron but for the panel that says courier; the market in the default
    shop = [p for p in b2.panels if p.location == "lantern_shop" and "mira" in p.characters]
    assert [p.outfits.get("mira") for p in shop] == ["apron", None, "apron"]
    assert all(not p.outfits for p in b2.panels if p.location == "harbor_market")
    assert b1.sheets() == [("mira", None), ("mira", "apron"), ("tomas", None)]  # by character, then as worn
    assert b2.sheets() == [("mira", "apron"), ("mira", None), ("tomas", None), ("juno", None)]
    assert b2.props() == ["letter", "bell"]


def test_moving_an_outfit_into_outfits_keeps_the_default_sheets_request(dressed):
    """The sample's sheets, and the dressed series' default sheet, are the same request: nothing is
    paid again for writing ``outfits:``. Another outfit is another sheet, of the same person (seed)."""
    sample = load_series(DataLayout(REPO_ROOT / "data"), SAMPLE)
    series = load_series(dressed, SAMPLE)
    before = character_request(sample, "ep01", "mira")
    assert character_request(sample, "ep01", "mira", "default") == before
    for outfit in (None, "courier"):
        r = character_request(series, "ep01", "mira", outfit)
        assert r.attribution.item == "mira" and r == before.model_copy(update={"attribution": r.attribution})
        assert r.key("local") == before.key("local") and r.key("fal") == before.key("fal")
    other = character_request(series, "ep01", "mira", "apron")
    assert other.attribution.item == "mira@apron" and other.attribution.reusable
    assert APRON in other.arguments["prompt"] and COURIER not in other.arguments["prompt"]
    assert other.arguments["seed"] == before.arguments["seed"] and other.key("fal") != before.key("fal")
    letter = prop_request(series, "ep01", "letter")
    assert (letter.attribution.asset, letter.attribution.item, letter.endpoint) == (
        "prop_sheets", "letter", "fal-ai/flux-2/flash")
    assert LETTER_LOOK in letter.arguments["prompt"] and letter.preview.kind == "prop"


def item(name: str) -> ImageItem:
    return ImageItem(item=name, path="", store_path=f"/store/{name}.png", key=name, sha256=f"sha-{name}",
                     status="planned", endpoint="e", provider="local", width=64, height=64)


@pytest.mark.parametrize("max_references, expected", [
    (4, ["character:mira@apron", "character:tomas", "prop:letter", "prop:bell"]),
    (6, ["character:mira@apron", "character:tomas", "prop:letter", "prop:bell", "background:lantern_shop", "style"]),
    (5, ["character:mira@apron", "character:tomas", "prop:letter", "prop:bell", "background:lantern_shop"]),
    (1, ["character:mira@apron"]),
])
def test_references_characters_then_props_then_background_then_style_cut_to_max(dressed, max_references,
                                                                                  expected):
    path = dressed.episodes_dir(SAMPLE) / "ep01.txt"
    replace(path, "PANEL medium: tomas, mira [outfit=mira:apron]",
            "PANEL medium: mira, tomas [outfit=mira:apron, props=letter, bell]")
    series = load_series(dressed, SAMPLE)
    series = series.model_copy(update={"models": series.models.model_copy(update={
        "panels": series.models.panels.model_copy(update={"max_references": max_references})})})
    plan = board(series, dressed, "ep01").panels[-1]
    sheets = {i: item(i) for i in ("mira", "mira@apron", "tomas")}
    refs = panel_references(series, plan, item("style"), sheets, {"lantern_shop": item("lantern_shop")},
                            {p: item(p) for p in ("letter", "bell")})
    assert [r.role for r in refs] == expected
    assert refs[0].sha256 == "sha-mira@apron"


# -- an episode made, offline and through the fake fal -------------------------------------------------

def quote(layout: DataLayout, episode: str) -> dict:
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as m, contextlib.redirect_stdout(out):
        m.setenv("WEBTOON_DATA_DIR", str(layout.root))
        assert main(["quote", "--episode", episode, "--json"]) == 0
    return json.loads(out.getvalue())


def families(q: dict) -> dict[str, tuple[int, int]]:
    return {f["family"]: (f["to_make"], f["made"]) for f in q["families"]}


def manifest(layout: DataLayout, episode: str, asset: str) -> dict:
    return json.loads((layout.output_dir(SAMPLE, episode) / f"{asset}.json").read_text())


def statuses(layout: DataLayout, episode: str, asset: str) -> dict[str, str]:
    return {i["item"]: i["status"] for i in manifest(layout, episode, asset)["items"]}


def storyboard_meta(instance: DagsterInstance, episode: str) -> dict:
    from dagster import AssetKey, AssetRecordsFilter
    [record] = instance.fetch_materializations(AssetRecordsFilter(
        asset_key=AssetKey([SAMPLE, "storyboard"]), asset_partitions=[episode]), limit=1).records
    return record.asset_materialization.metadata


def test_an_episode_with_a_prop_and_two_outfits_made_offline(tmp_path):
    """ep01 then ep02 of the dressed sample, each quoted before it is made (one test: the episodes take
    most of its time, and one worker makes them)."""
    layout = dress(fresh_data_root(tmp_path / "data"))
    (tmp_path / "dagster").mkdir()
    quotes = {}
    with DagsterInstance.local_temp(str(tmp_path / "dagster")) as inst:
        defs = build_definitions(layout)
        for episode in ("ep01", "ep02"):
            quotes[episode] = quote(layout, episode)
            run_season(inst, defs, layout, SAMPLE, [episode])
            quotes[episode]["preflight"] = storyboard_meta(inst, episode)
        quotes["ep01 again"] = quote(layout, "ep01")
    prop_sheets_are_made_once_and_reused_by_the_next_episode(layout)
    one_sheet_per_outfit_worn(layout)
    panels_reference_the_sheets_of_what_they_draw(layout)
    the_quote_counts_prop_and_outfit_sheets_as_the_preflight_does(quotes)


def prop_sheets_are_made_once_and_reused_by_the_next_episode(layout: DataLayout) -> None:
    assert statuses(layout, "ep01", "prop_sheets") == {"letter": "generated"}
    assert statuses(layout, "ep02", "prop_sheets") == {"letter": "cached", "bell": "generated"}
    assert (layout.output_dir(SAMPLE, "ep01") / "prop_sheets" / "letter.png").is_file()
    letter = {i["item"]: i for i in manifest(layout, "ep01", "prop_sheets")["items"]}["letter"]
    assert {i["item"]: i for i in manifest(layout, "ep02", "prop_sheets")["items"]}["letter"]["key"] == letter["key"]


def one_sheet_per_outfit_worn(layout: DataLayout) -> None:
    assert statuses(layout, "ep01", "character_sheets") == {
        "mira": "generated", "tomas": "generated", "mira@apron": "generated"}
    assert statuses(layout, "ep02", "character_sheets") == {
        "mira@apron": "cached", "mira": "cached", "tomas": "cached", "juno": "generated"}
    assert (layout.output_dir(SAMPLE, "ep01") / "character_sheets" / "mira@apron.png").is_file()


def panels_reference_the_sheets_of_what_they_draw(layout: DataLayout) -> None:
    for episode in ("ep01", "ep02"):
        sheets = {i["item"]: i for i in manifest(layout, episode, "character_sheets")["items"]}
        props = {i["item"]: i for i in manifest(layout, episode, "prop_sheets")["items"]}
        plans = {p["id"]: p for p in manifest(layout, episode, "storyboard")["panels"]}
        for panel in manifest(layout, episode, "panels")["items"]:
            plan = plans[panel["item"]]
            drawn = [c if c not in plan["outfits"] else f"{c}@{plan['outfits'][c]}" for c in plan["characters"]]
            expected = ([f"character:{s}" for s in drawn] + [f"prop:{p}" for p in plan["props"]]
                        + [f"background:{plan['location']}", "style"])[:4]
            assert panel["references"] == expected, (episode, panel["item"])
            record = json.loads((layout.store / "records" / panel["key"][:2] / f"{panel['key']}.json").read_text())
            sent = {r["role"]: r["sha256"] for r in record["references"]}
            for role in expected:
                kind, _, name = role.partition(":")
                if kind in ("character", "prop"):
                    assert sent[role] == (sheets if kind == "character" else props)[name]["sha256"]
    last = manifest(layout, "ep01", "panels")["items"][-1]
    assert last["references"][:2] == ["character:tomas", "character:mira@apron"]
    assert [i["item"] for i in manifest(layout, "ep02", "panels")["items"]][:1] == ["p01"]
    market = manifest(layout, "ep02", "panels")["items"][7]  # p08: mira and juno, the letter and the bell
    assert market["references"] == ["character:mira", "character:juno", "prop:letter", "prop:bell"]


def the_quote_counts_prop_and_outfit_sheets_as_the_preflight_does(quotes: dict) -> None:
    ep01, ep02 = quotes["ep01"], quotes["ep02"]
    assert list(families(ep01)) == ["style_sheet", "character_sheets", "prop_sheets", "backgrounds", "panels"]
    assert families(ep01) == {"style_sheet": (1, 0), "character_sheets": (3, 0), "prop_sheets": (1, 0),
                              "backgrounds": (2, 0), "panels": (10, 0)}
    prices = {f["family"]: Decimal(f["usd"]) for f in ep01["families"]}
    assert prices["prop_sheets"] == prices["character_sheets"] / 3 == prices["style_sheet"]  # the same family
    assert families(ep02) == {"style_sheet": (0, 1), "character_sheets": (1, 3), "prop_sheets": (1, 1),
                              "backgrounds": (1, 1), "panels": (11, 0)}
    for q in (ep01, ep02):  # the storyboard step's pre-flight quote saw the same
        assert Decimal(str(q["preflight"]["to_make_usd"].value)) == Decimal(q["total"]["usd"])
        assert q["preflight"]["to_make"].value == q["total"]["to_make"]
    assert quotes["ep01 again"]["total"]["to_make"] == 0  # made: nothing left to pay for


def test_every_distinct_request_is_paid_once_through_the_fake_fal(fake_fal, tmp_path):
    layout = dress(fresh_data_root(tmp_path / "data"))
    (tmp_path / "dagster").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "dagster")) as inst:
        run_season(inst, build_definitions(layout), layout, SAMPLE, ["ep01", "ep02"])
    rows = list(read_rows(layout.ledger_dir))
    generated = Counter(r.request_key for r in rows if r.status == "generated")
    assert {r.provider for r in rows} == {"fal"} and all(n == 1 for n in generated.values())
    # ep01: style, mira, mira@apron, tomas, letter, 2 plates, 10 panels; ep02: juno, bell, a plate, 11 panels
    assert len(generated) == 17 + 14
    stats = fake_fal.stats()
    assert stats["counts"]["paid"] == len(generated)
    assert stats["submissions_by_prompt"] and all(n == 1 for n in stats["submissions_by_prompt"].values())
    assert stats["paid_by_prompt"] == stats["submissions_by_prompt"]
    cached = {(r.asset, r.item) for r in rows if r.episode == "ep02" and r.status == "cached"}
    assert {("prop_sheets", "letter"), ("character_sheets", "mira"), ("character_sheets", "mira@apron")} <= cached
    assert statuses(layout, "ep02", "character_sheets") == {
        "mira@apron": "cached", "mira": "cached", "tomas": "cached", "juno": "generated"}
    assert statuses(layout, "ep02", "prop_sheets") == {"letter": "cached", "bell": "generated"}
