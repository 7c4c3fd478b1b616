"""Prose episodes: turned into the same validated panel plan by a text model on fal (through the
gateway: priced per token, cached, in the ledger) or, offline, by a deterministic splitter. Bad
model output is refused whole with a clear error."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from dagster import DagsterInstance

from webtoon_assets.bible import ProseScript, load_episode, load_series
from webtoon_assets.definitions import build_definitions
from webtoon_assets.ledger import read_rows
from webtoon_assets_tests.conftest import SAMPLE

PROSE = """Title: The Night Market Again
Format: prose

The harbour night market was loud with steam and gulls. Mira pushed through the crowd with Juno on her shoulder.
"Where are we going?" Mira asked.

In the lantern shop, Tomas was waiting at his workbench. "You are late," Tomas said.
Mira dropped her satchel on the floor.
"""

GOOD_PLAN = {"scenes": [
    {"location": "harbor_market", "description": "Night, steam and gulls.", "panels": [
        {"shot": "establishing", "characters": [], "action": "The market from above.", "captions": ["Later."]},
        {"shot": "medium", "characters": ["mira", "juno"], "action": "Mira pushes through the crowd.",
         "dialogue": [{"speaker": "mira", "kind": "speech", "text": "Where are we going?"},
                      {"speaker": "juno", "kind": "whisper", "text": "Left at the noodles."}]}]},
    {"location": "lantern_shop", "panels": [
        {"shot": "close-up", "characters": ["tomas"], "action": "Tomas looks up.",
         "dialogue": [{"speaker": "tomas", "text": "You are late."}], "sfx": ["thud"]}]}]}


def write_prose(layout, text: str = PROSE, episode: str = "ep04") -> None:
    (layout.episodes_dir(SAMPLE) / f"{episode}.txt").write_text(text)


def run(layout, tmp_path, episode: str = "ep04", raise_on_error: bool = True):
    (tmp_path / "dagster").mkdir(exist_ok=True)
    with DagsterInstance.local_temp(str(tmp_path / "dagster")) as inst:
        defs = build_definitions(layout)
        job = defs.resolve_job_def(f"{SAMPLE}__season")
        inst.add_dynamic_partitions(f"{SAMPLE}__episodes", [episode])
        return job.execute_in_process(instance=inst, partition_key=episode, raise_on_error=raise_on_error)


def board(layout, episode: str = "ep04") -> dict:
    return json.loads((layout.output_dir(SAMPLE, episode) / "storyboard.json").read_text())


def test_a_prose_script_is_recognised_and_validated(layout):
    write_prose(layout)
    series = load_series(layout, SAMPLE)
    script = load_episode(layout, series, "ep04")
    assert isinstance(script, ProseScript) and script.title == "The Night Market Again" and script.take == 1
    write_prose(layout, "Format: prose\n\nSomething happens.")
    with pytest.raises(Exception, match="title: expected a 'Title: ...' line"):
        load_episode(layout, series, "ep04")


def test_offline_a_deterministic_splitter_makes_the_panel_plan(layout, tmp_path):
    write_prose(layout)
    assert run(layout, tmp_path).success  # the whole episode: sheets, panels, lettering, slices
    b = board(layout)
    assert b["source"].startswith("fal-ai/any-llm via local")
    assert [p["location"] for p in b["panels"]][0] == "harbor_market" and b["panels"][-1]["location"] == "lantern_shop"
    lines = [(d["speaker"], d["text"]) for p in b["panels"] for d in p["dialogue"]]
    assert ("mira", "Where are we going?") in lines and ("tomas", "You are late") in lines
    assert (layout.output_dir(SAMPLE, "ep04") / "script_from_prose.txt").read_text().startswith("Title: The Night")
    rows = [r for r in read_rows(layout.ledger_dir) if r.asset == "storyboard"]
    assert [(r.status, r.billed_usd, r.unit) for r in rows] == [("generated", 0, "token")] and rows[0].list_usd > 0
    # deterministic: asked again, the same plan, from the cache
    first = board(layout)["panels"]
    assert run(layout, tmp_path).success and board(layout)["panels"] == first
    assert [r.status for r in read_rows(layout.ledger_dir) if r.asset == "storyboard"] == ["generated", "cached"]


def test_on_fal_the_text_model_makes_the_plan_priced_per_token(layout, tmp_path, fake_fal):
    write_prose(layout)
    fake_fal.configure(text_output="```json\n" + json.dumps(GOOD_PLAN) + "\n```")
    assert run(layout, tmp_path).success
    b = board(layout)
    assert len(b["panels"]) == 3 and b["source"].startswith("fal-ai/any-llm via fal")
    assert b["panels"][1]["dialogue"][1] == {"speaker": "juno", "kind": "whisper", "text": "Left at the noodles."}
    row = next(r for r in read_rows(layout.ledger_dir) if r.asset == "storyboard")
    assert row.status == "generated" and row.unit == "token" and row.billed_usd == row.list_usd > 0
    # priced from the usage the fake reports (chars / 4 each way): input at $0.50/M, output at $3.00/M (Gemini 3 Flash)
    prompt = next(p for p in fake_fal.stats()["submissions_by_prompt"] if p.startswith("Series:"))
    tin, tout = len(prompt) // 4, len("```json\n" + json.dumps(GOOD_PLAN) + "\n```") // 4
    assert row.units == tin + tout
    assert row.billed_usd == (Decimal(tin) * Decimal("0.50") + Decimal(tout) * Decimal("3.00")) / Decimal(1_000_000)

@pytest.mark.parametrize("answer, fragments", [
    ("Sure! Here is your storyboard: scene one...", ["expected a JSON plan from the model"]),
    (json.dumps({"scenes": [{"location": "moon_base", "panels": [{"shot": "wide", "characters": ["bob"]}]}]}),
     ["unknown location 'moon_base'", "unknown character 'bob'"]),
    (json.dumps({"scenes": [{"location": "rain_alley", "panels": [{"shot": "wide", "camera": "drone"}]}]}),
     ["plan.scenes.0.panels.0.camera", "Extra inputs are not permitted"]),
    (json.dumps({"scenes": [{"location": "rain_alley", "panels": [
        {"shot": "medium", "characters": ["mira"], "dialogue": [{"speaker": "tomas", "text": "Hi"}]}]}]}),
     ["TOMAS speaks in panel p01 but is not in its PANEL line"]),
], ids=["not-json", "unknown-ids", "unknown-field", "speaker-not-in-panel"])
def test_malformed_model_output_is_refused_whole(layout, tmp_path, fake_fal, answer, fragments):
    write_prose(layout)
    fake_fal.configure(text_output=answer)
    result = run(layout, tmp_path, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == f"{SAMPLE}__storyboard"
    message = failure.step_failure_data.error.message
    assert "ep04.txt (panels from fal-ai/any-llm via fal" in message and "Take: N" in message
    for f in fragments:
        assert f in message
    assert not (layout.output_dir(SAMPLE, "ep04") / "storyboard.json").exists()  # never half-used
    rows = [r for r in read_rows(layout.ledger_dir) if r.asset != "style_sheet"]  # the style needs no storyboard
    assert [(r.asset, r.status) for r in rows] == [("storyboard", "generated")]  # nothing made from the bad plan
    assert rows[0].billed_usd > 0  # the answer itself was paid for, and is recorded


def test_a_new_take_asks_the_model_again(layout, tmp_path, fake_fal):
    write_prose(layout)
    fake_fal.configure(text_output="not a plan")
    assert not run(layout, tmp_path, raise_on_error=False).success
    fake_fal.configure(text_output=json.dumps(GOOD_PLAN))
    assert not run(layout, tmp_path, raise_on_error=False).success  # the same request: the same (cached) answer
    write_prose(layout, PROSE.replace("Format: prose", "Format: prose\nTake: 2"))
    assert run(layout, tmp_path).success
    assert fake_fal.stats()["counts"]["paid"] >= 2
