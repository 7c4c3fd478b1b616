"""Every kind of bad bible or script fails before generation, naming the file, the field and
what was expected."""

from __future__ import annotations

import copy

import pytest
import yaml

from webtoon_assets.bible import BibleError, episode_ids, load_episode, load_series
from webtoon_assets_tests.conftest import SAMPLE, expect_error


def edit_series(layout, change) -> None:
    path = layout.series_dir(SAMPLE) / "series.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


def test_sample_bible_is_valid(layout):
    series = load_series(layout, SAMPLE)
    assert len(series.characters) == 3 and len(series.locations) >= 3
    assert episode_ids(layout, SAMPLE) == ["ep01", "ep02", "ep03"]


@pytest.mark.parametrize(
    "change, fragments",
    [
        (lambda d: d.pop("title"), ["series.yaml", "title", "Field required"]),
        (lambda d: d["characters"]["mira"].update(palette=["blue"]),
         ["series.yaml", "characters.mira.palette.0", "expected a colour as '#rrggbb'", "'blue'"]),
        (lambda d: d["characters"].update({"Bad Name": copy.deepcopy(d["characters"]["mira"])}),  # no YAML alias
         ["characters.Bad Name", "expected a slug"]),
        (lambda d: d["locations"].update({"../../etc": {"name": "x", "description": "y"}}),
         ["locations.../../etc", "expected a slug", "no paths, no '..'"]),
        (lambda d: d["characters"]["mira"].update(colour="#ffffff"),
         ["characters.mira.colour", "Extra inputs are not permitted"]),
        (lambda d: d.update(planned_episodes=0), ["planned_episodes", "greater than or equal to 1"]),
        (lambda d: d["models"]["panels"].update(endpoint="../evil"), ["models.panels.endpoint", "expected an endpoint id"]),
        (lambda d: d["models"]["panels"].update(image_size="huge"), ["models.panels.image_size", "square_hd"]),
        (lambda d: d["models"]["panels"].update(arguments={"prompt": "x"}),
         ["models.panels.arguments", "set by the pipeline"]),
        (lambda d: d.update(id="other"), ["id: expected 'lantern_street'"]),
    ],
    ids=["missing-field", "bad-colour", "bad-character-id", "escaping-location-id", "unknown-field",
         "bad-number", "bad-endpoint", "bad-image-size", "reserved-argument", "id-mismatch"],
)
def test_invalid_series_yaml(layout, change, fragments):
    edit_series(layout, change)
    err = expect_error(lambda: load_series(layout, SAMPLE), *fragments)
    assert err.path.endswith("lantern_street/series.yaml")


def test_series_yaml_that_is_not_yaml(layout):
    (layout.series_dir(SAMPLE) / "series.yaml").write_text("title: [unclosed\n")
    expect_error(lambda: load_series(layout, SAMPLE), "series.yaml", "expected valid YAML")


SCRIPT_CASES = {
    "unknown-character": ("PANEL full: mira", "PANEL full: mira, bob",
                          ["line 9", "panel.characters", "unknown character 'bob'", "expected one of ['juno', 'mira', 'tomas']"]),
    "unknown-location": ("SCENE rain_alley:", "SCENE moon_base:", ["line 3", "scene.location", "unknown location 'moon_base'"]),
    "unknown-shot": ("PANEL full: mira", "PANEL fisheye: mira", ["panel.shot", "unknown shot 'fisheye'", "close-up"]),
    "unknown-speaker": ("MIRA (thought): One letter left.", "BOB: One letter left.",
                        ["line 11", "dialogue.speaker", "unknown speaker 'BOB'"]),
    "speaker-not-in-panel": ("MIRA (thought): One letter left.", "TOMAS: One letter left.",
                             ["dialogue.speaker", "TOMAS speaks in panel p02 but is not in its PANEL line", "(off)"]),
    "bad-line-kind": ("MIRA (thought)", "MIRA (sings)", ["dialogue.kind", "unknown 'sings'", "thought"]),
    "bad-panel-option": ("PANEL wide: mira [gutter=200]", "PANEL wide: mira [gutter=wide]",
                         ["panel option 'gutter=wide'", "gutter expects a whole number"]),
    "bad-pace": ("PANEL wide: mira [gutter=200]", "PANEL wide: mira [pace=slowish]",
                 ["panel option 'pace=slowish'", "pace expects one of ['rapid', 'normal', 'pause', 'scene']"]),
    "unknown-option": ("PANEL wide: mira [gutter=200]", "PANEL wide: mira [zoom=2]",
                       ["panel option 'zoom=2'", "expected one of ['take', 'gutter', 'pace'"]),
    "missing-title": ("Title: The Shop That Kept the Light", "", ["title: expected a 'Title: ...' line"]),
    "panel-before-scene": ("SCENE rain_alley: Night. The storm has only just passed.", "",
                           ["expected a 'SCENE <location>' line before the first PANEL"]),
}


@pytest.mark.parametrize("case", SCRIPT_CASES)
def test_invalid_script(layout, case):
    old, new, fragments = SCRIPT_CASES[case]
    path = layout.episodes_dir(SAMPLE) / "ep01.txt"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    series = load_series(layout, SAMPLE)
    err = expect_error(lambda: load_episode(layout, series, "ep01"), "ep01.txt", *fragments)
    assert err.path.endswith("episodes/ep01.txt")


def test_script_problems_are_all_reported_at_once(layout):
    path = layout.episodes_dir(SAMPLE) / "ep01.txt"
    path.write_text(path.read_text().replace("PANEL full: mira", "PANEL full: bob").replace("SCENE lantern_shop", "SCENE mars"))
    err = expect_error(lambda: load_episode(layout, load_series(layout, SAMPLE), "ep01"), "bob", "mars")
    assert len(err.problems) >= 3  # bob, MIRA speaking outside her panel, mars


@pytest.mark.parametrize("bad", ["../ep01", "..", "ep01/../../x", "/etc/passwd", "EP01", ""])
def test_episode_ids_that_would_escape_are_refused(layout, bad):
    series = load_series(layout, SAMPLE)
    expect_error(lambda: load_episode(layout, series, bad), "episode id", "expected a slug")


@pytest.mark.parametrize("bad", ["../series", "..", "a/b"])
def test_series_ids_that_would_escape_are_refused(layout, bad):
    expect_error(lambda: load_series(layout, bad), "series id", "expected a slug")


def test_a_partition_key_that_escapes_fails_the_run_before_any_generation(instance, defs, layout):
    partitions = f"{SAMPLE}__episodes"
    instance.add_dynamic_partitions(partitions, ["../../etc"])
    job = defs.resolve_job_def(f"{SAMPLE}__season")
    result = job.execute_in_process(instance=instance, partition_key="../../etc", raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert failures and all("expected a slug" in e.step_failure_data.error.message for e in failures)
    assert not (layout.store / "images").exists()
