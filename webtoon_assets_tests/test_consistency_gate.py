"""The consistency gate (series.yaml ``consistency:``): the gate's logic (best take kept, at most N
retakes, a budget refusal stops it), the trial's retake estimates and $/accepted panel, an offline
episode with the gate forced on (a ledger row per retake, the metadata, a re-run pays nothing), and
an episode on the fake fal judged by the vision judge (each retake paid once, the best take kept)."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance
from pydantic import ValidationError

from webtoon_assets.bible.models import ConsistencyGate, Thresholds
from webtoon_assets.consistency.decision import Candidate, recommend
from webtoon_assets.consistency.gate import (GateStop, Take, retake_estimate, retake_request, retake_seed,
                                             run_gate)
from webtoon_assets.definitions import build_definitions
from webtoon_assets.demo import run_season
from webtoon_assets.gateway import Attribution, GenerationRequest
from webtoon_assets.gateway.budget import BudgetExceeded
from webtoon_assets.gateway.retry import GenerationFailed
from webtoon_assets.gateway.store import sha256_file
from webtoon_assets.ledger import read_rows
from webtoon_assets_tests.conftest import SAMPLE
from webtoon_assets_tests.test_trial import edit_series

T = Thresholds()
TARGET = Decimal("0.05")


# -- the gate's logic -----------------------------------------------------------------------------

def panel_request(seed: int | None = 1234) -> GenerationRequest:
    return GenerationRequest(endpoint="fal-ai/flux-2/flash/edit",
                             arguments={"prompt": "Mira runs", "image_size": "portrait_4_3",
                                        **({"seed": seed} if seed is not None else {})},
                             attribution=Attribution(series=SAMPLE, episode="ep01", asset="panels", item="p03"))


def test_a_retake_is_the_panel_asked_again_with_a_derived_seed():
    first = panel_request()
    one, two = retake_request(first, 1), retake_request(first, 2)
    assert one.arguments["seed"] == retake_seed(1234, 1) == retake_request(first, 1).arguments["seed"]  # reproducible
    assert len({first.arguments["seed"], one.arguments["seed"], two.arguments["seed"]}) == 3
    assert {k: v for k, v in one.arguments.items() if k != "seed"} == {"prompt": "Mira runs", "image_size": "portrait_4_3"}
    assert (one.attribution.asset, one.attribution.item, two.attribution.item) == ("panels", "p03~retake1", "p03~retake2")
    assert len({first.key("fal"), one.key("fal"), two.key("fal")}) == 3  # each a request of its own, cached by key
    seedless = panel_request(seed=None)
    assert retake_request(seedless, 1).take == 2 and retake_request(seedless, 1).key("fal") != seedless.key("fal")


def scripted(scores: dict[int, float], calls: list[int], fail: dict[int, Exception] | None = None):
    def retake(n: int) -> Take:
        calls.append(n)
        if fail and n in fail:
            raise fail[n]
        return Take(n, n, {"mira": scores[n]})
    return retake


def test_the_best_take_is_kept_and_retakes_stop_at_n():
    calls: list[int] = []
    out = run_gate("p03", Take(0, 1, {"mira": 60, "tomas": 90}), 80, 2, scripted({1: 75, 2: 70}, calls))
    assert calls == [1, 2] and out.retakes == 2  # never more than max_retakes
    assert out.best.n == 1 and out.best.score == 75 and not out.passed  # the best, still under 80
    assert out.takes[0].score == 60  # a panel scores as its weakest character

    calls.clear()
    out = run_gate("p03", Take(0, 1, {"mira": 60}), 80, 5, scripted({1: 85, 2: 99}, calls))
    assert calls == [1] and out.best.n == 1 and out.passed  # the first take over the threshold ends it

    calls.clear()
    assert run_gate("p03", Take(0, 1, {"mira": 81}), 80, 2, scripted({}, calls)).retakes == 0 and not calls
    assert run_gate("p03", Take(0, 1, {"mira": 10}), 80, 0, scripted({}, calls)).retakes == 0 and not calls

    tie = run_gate("p03", Take(0, 1, {"mira": 50}), 80, 2, scripted({1: 50, 2: 50}, []))
    assert tie.best.n == 0  # of equal scores, the earliest take (the fewest retakes) is kept


def test_a_budget_refusal_stops_retaking_and_keeps_the_best_so_far():
    stop, calls = GateStop(), []
    refused = BudgetExceeded("budget refused panels p03~retake2: episode budget $0.30")
    out = run_gate("p03", Take(0, 1, {"mira": 40}), 80, 3, scripted({1: 55}, calls, {2: refused}), stop)
    assert calls == [1, 2] and out.best.n == 1 and out.retakes == 1
    assert out.stopped.startswith("retake 2 refused by the budget: budget refused panels p03~retake2")
    # every other panel of the episode stops asking
    other = run_gate("p05", Take(0, 1, {"mira": 40}), 80, 3, scripted({1: 99}, calls), stop)
    assert other.retakes == 0 and "the budget refused p03's retake 2" in other.stopped and calls == [1, 2]
    # a failed retake stops that panel only
    failed = run_gate("p06", Take(0, 1, {"mira": 40}), 80, 3,
                      scripted({}, [], {1: GenerationFailed("panels p06~retake1 failed after 3 attempt(s)")}))
    assert failed.best.n == 0 and failed.stopped.startswith("retake 1 failed")


# -- the trial's estimates ------------------------------------------------------------------------

def test_retake_rate_and_takes_per_accepted_panel():
    none_under = retake_estimate([90, 85, 95, 80, 99], 80, 2)
    assert (none_under.retake_rate, none_under.expected_takes, none_under.takes_per_accepted) == (0, 1, 1)
    e = retake_estimate([90, 70, 95, 60, 99], 80, 2)  # 2 of 5 under: p = 0.4
    assert e.retake_rate == 0.4 and e.expected_takes == pytest.approx(1 + 0.4 + 0.16)
    assert e.acceptance == pytest.approx(1 - 0.4 ** 3) and e.takes_per_accepted == pytest.approx(1.56 / 0.936)
    assert e.cost_per_accepted(Decimal("0.012")) == Decimal("0.020000")
    assert retake_estimate([90, 70], 80, 0).takes_per_accepted == pytest.approx(2)  # no retakes: 1 in 2 accepted
    hopeless = retake_estimate([50, 60], 80, 2)
    assert math.isinf(hopeless.takes_per_accepted) and hopeless.cost_per_accepted(Decimal("0.01")) is None


def gc(name: str, cost: str, consistency: float, scores: list[float], n: int = 2) -> Candidate:
    return Candidate(f"fal-ai/{name}", name, Decimal(cost), consistency, retakes=retake_estimate(scores, 80, n))


def test_the_recommendation_weighs_a_cheap_model_plus_retakes_against_a_dearer_one():
    shaky = gc("flash", "0.012", 86, [95, 70, 75, 79, 99])  # 3 of 5 under 80: 2.5 takes per accepted panel
    steady = gc("dev", "0.022", 92, [90, 91, 92, 93, 94])
    assert shaky.cost_per_accepted_panel_usd == Decimal("0.030000")
    # without the gate, as ever: the cheapest per panel at >= 85 %
    assert recommend([shaky, steady], T, TARGET).model == "flash"
    rec = recommend([shaky, steady], T, TARGET, gate=True)
    assert rec.model == "dev" and "by $ per accepted panel" in rec.reason and "$0.0220/accepted panel" in rec.reason
    assert "cheaper per panel but not chosen: flash $0.0120/panel x 2.50 takes = $0.0300/accepted panel" in rec.reason
    # a cheap model that rarely needs a retake stays the pick
    assert recommend([gc("flash", "0.012", 86, [95, 70, 85, 89, 99]), steady], T, TARGET, gate=True).model == "flash"
    # the target is met or not per accepted panel: over it, a model needs the premium 90 %
    pricey = gc("mid", "0.040", 88, [95, 70, 85, 89, 99])  # 0.040 x 1.25 = 0.050 (within); 2 under: 0.0667
    assert recommend([pricey], T, TARGET, gate=True).model == "mid"
    rec = recommend([gc("mid", "0.040", 88, [95, 70, 75, 89, 99])], T, TARGET, gate=True)
    assert rec.action == "train LoRA" and "by $ per accepted panel" in rec.reason
    # a model none of whose panels would pass the gate is passed over
    assert recommend([gc("odd", "0.001", 86, [79, 79, 79]), steady], T, TARGET, gate=True).model == "dev"


def test_the_trial_reports_the_retake_rate_and_dollars_per_accepted_panel(layout, tmp_path):
    from webtoon_assets_tests.conftest import cost_sql
    from webtoon_assets_tests.test_trial import run_trial

    edit_series(layout, **{"trial.candidates": ["fal-ai/flux-2/flash/edit"], "consistency.gate": True,
                           "consistency.max_retakes": 3})
    path = layout.output_dir(SAMPLE) / "trials" / "fal-ai__flux-2__flash__edit.json"
    assert run_trial(layout, tmp_path)[0][0].success
    scores = sorted(json.loads(path.read_text())["scores"].values())
    assert len(set(scores)) == 5
    # the gate's threshold at the median variation: 2 of 5 takes under it (the trial again is all hits)
    edit_series(layout, **{"consistency.threshold": scores[2]})
    results, meta = run_trial(layout, tmp_path)
    trial = json.loads(path.read_text())
    e = retake_estimate(scores, scores[2], 3)
    assert (trial["gate_threshold"], trial["max_retakes"], trial["retake_rate"], e.retake_rate) == (scores[2], 3, 0.4, 0.4)
    (rate, takes, per_accepted, per_panel), = cost_sql(
        layout, "SELECT retake_rate, takes_per_accepted_panel, cost_per_accepted_panel_usd, cost_per_panel_usd "
                "FROM model_trials")
    assert rate == 0.4 and takes == pytest.approx((1 + .4 + .16 + .064) / (1 - .4 ** 4), abs=1e-6)
    assert per_accepted == e.cost_per_accepted(per_panel) > per_panel
    assert meta["retake_rate"].value == 0.4
    assert meta["cost_per_accepted_panel_usd"].value == pytest.approx(float(per_accepted))
    assert "| 40% | $" in meta["candidates"].value  # the recommendation's table: retake rate, $/accepted panel


def test_the_setting_is_off_by_default_and_checked():
    gate = ConsistencyGate()
    assert (gate.gate, gate.max_retakes, gate.threshold_for(T), gate.scorer) == (False, 2, 80, None)
    assert ConsistencyGate.model_validate({"gate": "always", "threshold": 85}).threshold_for(T) == 85
    assert ConsistencyGate.model_validate({"gate": True}).gate is True
    for bad in ({"gate": "sometimes"}, {"threshold": 101}, {"max_retakes": -1}, {"retakes": 2}):
        with pytest.raises(ValidationError):
            ConsistencyGate.model_validate(bad)


# -- an offline episode with the gate forced on ---------------------------------------------------

GATED = ["p02", "p03", "p04", "p05", "p06", "p07", "p08", "p09", "p10"]  # ep01's panels with characters


def panels_manifest(layout, episode: str = "ep01") -> dict:
    return json.loads((layout.output_dir(SAMPLE, episode) / "panels.json").read_text())


def panels_meta(inst) -> dict:
    event = inst.get_latest_materialization_event(AssetKey([SAMPLE, "panels"]))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def consistency_check(inst):
    from dagster._core.event_api import PartitionKeyFilter

    key = AssetCheckKey(AssetKey([SAMPLE, "panels"]), "character_consistency")
    record, = inst.event_log_storage.get_asset_check_execution_history(
        key, limit=1, partition_filter=PartitionKeyFilter(key="ep01"))
    return record.event.dagster_event.event_specific_data


def test_offline_the_gate_runs_only_when_forced_and_a_rerun_pays_nothing(layout, tmp_path):
    (tmp_path / "d").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "d")) as inst:
        # gate: true offline does nothing: the previews' scores mean nothing
        edit_series(layout, **{"consistency.gate": True, "consistency.threshold": 100})
        run_season(inst, build_definitions(layout), layout, SAMPLE, ["ep01"])
        assert panels_meta(inst)["consistency_gate"].startswith("off offline")
        assert not [r for r in read_rows(layout.ledger_dir) if "~" in r.item]
        assert all(i["gate"] is None for i in panels_manifest(layout)["items"])
        # consistency.detector's default: the PANEL line's order, assumed for free (no judge asked for boxes)
        assert not [r for r in read_rows(layout.ledger_dir) if r.endpoint == "fal-ai/any-llm/vision"]
        p05 = panels_manifest(layout)["items"][4]
        assert (p05["item"], p05["boxes_source"], p05["boxes_detected"]) == ("p05", "panel-line", [])

        # always: a threshold every preview fails, so each panel with characters is retaken twice
        edit_series(layout, **{"consistency.gate": "always"})
        first_run, = run_season(inst, build_definitions(layout), layout, SAMPLE, ["ep01"])
        rows = list(read_rows(layout.ledger_dir))
        retakes = [r for r in rows if r.run_id == first_run and "~retake" in r.item]
        assert sorted(r.item for r in retakes) == sorted(f"{p}~retake{n}" for p in GATED for n in (1, 2))
        assert all(r.asset == "panels" and r.status == "generated" and r.list_usd > 0 for r in retakes)
        meta = panels_meta(inst)
        assert meta["consistency_gate"].startswith("on: under 100% (palette-structure), up to 2 retake(s)")
        assert (meta["panels_gated"], meta["panels_retaken"], meta["retakes"], meta["retakes_made"]) == (9, 9, 18, 18)
        assert meta["panels_under_threshold"] == 9 and meta["retakes_spent_usd"] == 0  # offline: nothing billed
        assert Decimal(str(meta["retakes_quote_usd"])) == sum(r.list_usd for r in retakes)  # what counts offline
        assert "| p02 | 2 |" in meta["retake_table"]

        items = {i["item"]: i for i in panels_manifest(layout)["items"]}
        assert items["p01"]["gate"] is None  # no characters: not gated
        for p in GATED:
            gate = items[p]["gate"]
            takes = gate["takes"]
            assert [t["take"] for t in takes] == [0, 1, 2] and not gate["passed"] and gate["threshold"] == 100
            assert takes[1]["seed"] == retake_seed(takes[0]["seed"], 1) and takes[2]["seed"] == retake_seed(takes[0]["seed"], 2)
            best = max(takes, key=lambda t: (t["score"], -t["take"]))
            assert (gate["take"], gate["score"], gate["seed"]) == (best["take"], best["score"], best["seed"])
            assert items[p]["key"] == best["key"] and sha256_file(items[p]["path"]) == items[p]["sha256"]
        assert any(items[p]["gate"]["take"] > 0 for p in GATED)  # some retake did better than the first take
        # the check still reports offline panels as not measured
        assert consistency_check(inst).description.startswith("ep01: not measured (preview stand-ins)")

        # again: the same scores ask for the same retakes, all in the store
        again, = run_season(inst, build_definitions(layout), layout, SAMPLE, ["ep01"])
        rerun = [r for r in read_rows(layout.ledger_dir) if r.run_id == again]
        assert rerun and all(r.status == "cached" for r in rerun)
        assert sorted(r.item for r in rerun if "~retake" in r.item) == sorted(r.item for r in retakes)
        meta = panels_meta(inst)
        assert (meta["retakes"], meta["retakes_made"], meta["retakes_quote_usd"]) == (18, 0, 0)
        kept = {i["item"]: (i["key"], i["sha256"], i["gate"] and [(t["take"], t["key"], t["score"]) for t in i["gate"]["takes"]])
                for i in panels_manifest(layout)["items"]}
        assert kept == {p: (i["key"], i["sha256"], i["gate"] and [(t["take"], t["key"], t["score"]) for t in i["gate"]["takes"]])
                        for p, i in items.items()}  # the same takes, the same scores, the same take kept


def test_a_budget_refusal_stops_retakes_and_the_episode_still_lands(layout, tmp_path, capsys):
    from webtoon_assets.cli import main

    assert main(["quote", "--episode", "ep01", "--json"]) == 0
    budget = Decimal(json.loads(capsys.readouterr().out)["total"]["usd"]) + Decimal("0.04")  # about two retakes
    (tmp_path / "d").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "d")) as inst:
        edit_series(layout, **{"consistency.gate": "always", "consistency.threshold": 100,
                               "budget.per_episode_usd": float(budget)})
        run_id, = run_season(inst, build_definitions(layout), layout, SAMPLE, ["ep01"])
        rows = [r for r in read_rows(layout.ledger_dir) if r.run_id == run_id]
        made = [r for r in rows if "~retake" in r.item and r.status == "generated"]
        refused = [r for r in rows if "~retake" in r.item and r.status == "refused"]
        assert made and refused and all("budget refused" in r.error for r in refused)
        assert sum(r.counted_usd for r in rows) <= budget
        assert all(r.status != "refused" for r in rows if "~" not in r.item)  # every first take was made
        meta = panels_meta(inst)
        assert meta["retakes_made"] == len(made) < 18 and "refused by the budget" in meta["retakes_stopped"]
        items = panels_manifest(layout)["items"]
        stopped = [i["gate"]["stopped"] or "" for i in items if i["gate"]]
        assert len(items) == 10 and len(stopped) == 9 and any("refused by the budget" in why for why in stopped)
        assert all(why.startswith(("retake", "not retaken further: the budget refused")) for why in stopped if why)


# -- on the fake fal, judged by the vision judge --------------------------------------------------

def test_on_fal_each_retake_is_paid_once_and_the_best_take_is_kept(layout, tmp_path, fake_fal):
    edit_series(layout, **{"consistency.gate": True, "consistency.scorer": "vision-judge",
                           "consistency.max_retakes": 1})
    fake_fal.configure(text_output='{"score": 50}')  # every take under 80
    (tmp_path / "d").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "d")) as inst:
        one, = run_season(inst, build_definitions(layout), layout, SAMPLE, ["ep01"])
        rows = [r for r in read_rows(layout.ledger_dir) if r.run_id == one]
        retakes = [r for r in rows if r.item.endswith("~retake1")]
        assert sorted(r.item for r in retakes) == [f"{p}~retake1" for p in GATED]
        assert all(r.provider == "fal" and r.status == "generated" and r.billed_usd > 0 for r in retakes)
        judged = [r for r in rows if r.endpoint == "fal-ai/any-llm/vision"]
        assert judged and all(r.asset == "panels" and r.item.endswith("~judge") for r in judged)
        assert {r.item for r in judged if r.status == "generated"} >= {f"{p}~judge" for p in GATED}
        meta = panels_meta(inst)
        assert meta["consistency_gate"] == "on: under 80% (vision-judge), up to 1 retake(s)"
        assert (meta["panels_retaken"], meta["retakes_made"], meta["panels_under_threshold"]) == (9, 9, 9)
        assert Decimal(str(meta["retakes_spent_usd"])) == sum(r.billed_usd for r in retakes) > 0
        items = {i["item"]: i for i in panels_manifest(layout)["items"]}
        assert all(items[p]["gate"]["take"] == 0 and items[p]["gate"]["score"] == 50 for p in GATED)  # a tie: the first
        check = consistency_check(inst)
        assert not check.passed and "under 80% (vision-judge)" in check.description

        # one more retake allowed, and the judge now likes what it sees: only the new retakes are paid
        paid = fake_fal.stats()["counts"]["paid"]
        edit_series(layout, **{"consistency.max_retakes": 2})
        fake_fal.configure(text_output='{"score": 90}')
        two, = run_season(inst, build_definitions(layout), layout, SAMPLE, ["ep01"])
        rows = [r for r in read_rows(layout.ledger_dir) if r.run_id == two]
        made = [r for r in rows if r.status == "generated"]
        assert sorted(r.item for r in made if r.endpoint != "fal-ai/any-llm/vision") == [f"{p}~retake2" for p in GATED]
        assert {r.item for r in made if r.endpoint == "fal-ai/any-llm/vision"} == {f"{p}~retake2~judge" for p in GATED}
        assert all(r.status == "cached" for r in rows if r.item.endswith("~retake1"))  # paid once, in the first run
        assert fake_fal.stats()["counts"]["paid"] - paid == len(made)
        items = {i["item"]: i for i in panels_manifest(layout)["items"]}
        retake2 = {r.item.split("~")[0]: r for r in made if r.item.endswith("~retake2")}
        for p in GATED:
            gate = items[p]["gate"]
            assert (gate["take"], gate["score"], gate["passed"]) == (2, 90, True)
            assert [t["score"] for t in gate["takes"]] == [50, 50, 90]
            assert items[p]["key"] == retake2[p].request_key and sha256_file(items[p]["path"]) == items[p]["sha256"]
        meta = panels_meta(inst)
        assert (meta["panels_kept_retake"], meta["panels_under_threshold"]) == (9, 0)
        assert consistency_check(inst).passed

        # and again: nothing is paid
        paid = fake_fal.stats()["counts"]["paid"]
        three, = run_season(inst, build_definitions(layout), layout, SAMPLE, ["ep01"])
        assert all(r.status == "cached" for r in read_rows(layout.ledger_dir) if r.run_id == three)
        assert fake_fal.stats()["counts"]["paid"] == paid
        assert {i["item"]: i["key"] for i in panels_manifest(layout)["items"]} == {k: v["key"] for k, v in items.items()}
