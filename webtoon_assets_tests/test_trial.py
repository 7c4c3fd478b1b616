"""Choosing the model with numbers: the decision tree, the scorers, the trial job (offline and on
the fake fal), and the checks on every episode."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import yaml
from dagster import AssetCheckKey, AssetKey, DagsterInstance
from PIL import Image

from webtoon_assets.bible.models import Thresholds
from webtoon_assets.consistency import EmbeddingScorer, PaletteStructureScorer, make_scorer
from webtoon_assets.consistency.decision import Candidate, recommend, verdict
from webtoon_assets.definitions import build_definitions, trial_job_name
from webtoon_assets.demo import run_season
from webtoon_assets.ledger import read_rows
from webtoon_assets_tests.conftest import SAMPLE, cost_sql

T = Thresholds()
TARGET = Decimal("0.05")


# -- the decision tree, on constructed score tables -----------------------------------------------

def c(name: str, cost: str, score: float) -> Candidate:
    return Candidate(f"fal-ai/{name}", name, Decimal(cost), score)


@pytest.mark.parametrize("score, expected", [(95, "production ready"), (90, "production ready"), (89.9, "acceptable"),
                                             (80, "acceptable"), (75, "needs LoRA"), (70, "needs LoRA"), (69, "reject")])
def test_verdicts(score, expected):
    assert verdict(score, T) == expected


def test_the_cheapest_model_at_85_wins():
    rec = recommend([c("pro", "0.081", 95), c("flash", "0.012", 86), c("dev", "0.022", 99)], T, TARGET)
    assert (rec.action, rec.model) == ("use", "flash") and "cheapest model" in rec.reason


def test_else_the_next_cheapest_at_85():
    rec = recommend([c("flash", "0.012", 84.9), c("dev", "0.022", 88), c("klein", "0.030", 97)], T, TARGET)
    assert rec.model == "dev"


def test_a_premium_model_needs_90():
    table = [c("flash", "0.012", 70), c("dev", "0.022", 80), c("pro", "0.081", 91)]
    assert recommend(table, T, TARGET).model == "pro" and "premium" in recommend(table, T, TARGET).reason
    table[-1] = c("pro", "0.081", 88)  # 88 would pass a cheap model, not a premium one
    rec = recommend(table, T, TARGET)
    assert (rec.action, rec.model) == ("train LoRA", None) and "best was pro on fal at 88.0%" in rec.reason


def test_offline_previews_give_no_recommendation_not_a_lora():
    offline = [Candidate("fal-ai/flash", "flash", Decimal("0.012"), 40, measured=False),
               Candidate("fal-ai/pro", "pro", Decimal("0.081"), 45, measured=False)]
    rec = recommend(offline, T, TARGET)
    assert (rec.action, rec.model) == ("none", None) and "offline previews are not measured" in rec.reason
    # a measured candidate is judged as before; the unmeasured ones are left out of the decision
    assert recommend([*offline, c("dev", "0.022", 60)], T, TARGET).action == "train LoRA"
    assert recommend([*offline, c("dev", "0.022", 88)], T, TARGET).model == "dev"
    assert verdict(40, T, measured=False) == "not measured (preview stand-ins)" and verdict(40, T) == "reject"


def test_nothing_passing_means_lora_and_thresholds_are_configurable():
    assert recommend([c("flash", "0.012", 60)], T, TARGET).action == "train LoRA"
    assert recommend([c("flash", "0.012", 60)], Thresholds(pick=55), TARGET).model == "flash"


# -- scorers --------------------------------------------------------------------------------------

def figure(path: Path, body: str, bg: str = "#1b2a41", shift: int = 0) -> Path:
    im = Image.new("RGB", (256, 256), bg)
    from PIL import ImageDraw
    d = ImageDraw.Draw(im)
    d.ellipse((100 + shift, 40, 156 + shift, 96), fill="#f1c9a5")
    d.rounded_rectangle((90 + shift, 100, 166 + shift, 220), radius=20, fill=body)
    im.save(path)
    return path


def test_palette_structure_scores_alike_high_and_different_low(tmp_path):
    s = PaletteStructureScorer()
    a = figure(tmp_path / "a.png", "#2a9d8f")
    assert s.score(a, a) == 100
    moved = s.score(a, figure(tmp_path / "b.png", "#2a9d8f", shift=12))
    recoloured = s.score(a, figure(tmp_path / "c.png", "#c8553d", bg="#f7e1a0"))
    assert 100 > moved > recoloured
    assert s.score(a, figure(tmp_path / "b2.png", "#2a9d8f", shift=12)) == moved  # deterministic


def test_a_sheet_is_cropped_once_and_again_when_it_changes(tmp_path):
    """The reference crop is cached per file version: a redrawn sheet is never scored from its old crop."""
    s = PaletteStructureScorer()
    sheet, panel = figure(tmp_path / "sheet.png", "#2a9d8f"), figure(tmp_path / "panel.png", "#2a9d8f")
    assert s.score(sheet, panel) == 100
    assert len(s._references) == 1 and s.score(sheet, panel) == 100 and len(s._references) == 1
    figure(sheet, "#c8553d", bg="#f7e1a0")  # the sheet is made again, differently
    os.utime(sheet, ns=(1, 1))  # whatever its time stamp says, its version changed
    assert s.score(sheet, panel) < 100


def test_the_embedding_scorer_runs_a_local_onnx_model(tmp_path, monkeypatch):
    """A tiny ONNX image encoder made here (mean colour per channel, pooled): the real loading and
    inference path, on a model the test builds, since weights cannot be downloaded."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["embedding"])],
        "tiny-encoder",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "encoder.onnx"
    onnx.save(model, str(path))
    monkeypatch.setenv("WEBTOON_EMBEDDING_MODEL", str(path))
    scorer = make_scorer("embedding")
    assert isinstance(scorer, EmbeddingScorer) and scorer.side == 32
    a = figure(tmp_path / "a.png", "#2a9d8f")
    assert scorer.score(a, a) == pytest.approx(100)
    assert scorer.score(a, figure(tmp_path / "c.png", "#c8553d", bg="#f7e1a0")) < 100
    vec = scorer.embed(Image.open(a).convert("RGB").resize((32, 32)))
    assert vec.shape == (3,) and np.isfinite(vec).all()
    monkeypatch.delenv("WEBTOON_EMBEDDING_MODEL")
    with pytest.raises(ValueError, match="needs WEBTOON_EMBEDDING_MODEL"):
        make_scorer("embedding")


# -- the trial job --------------------------------------------------------------------------------

def edit_series(layout, **changes) -> None:
    path = layout.series_dir(SAMPLE) / "series.yaml"
    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path.write_text(yaml.safe_dump(data))


def run_trial(layout, tmp_path):
    (tmp_path / "dagster").mkdir(exist_ok=True)
    job = build_definitions(layout).resolve_job_def(trial_job_name(SAMPLE))
    with DagsterInstance.local_temp(str(tmp_path / "dagster")) as inst:
        results = [job.execute_in_process(instance=inst, partition_key=k)
                   for k in job.partitions_def.get_partition_keys()]
        # what the trial_costs sensor requests after each successful trial run (the daemon runs it)
        assert build_definitions(layout).resolve_job_def("refresh_cost_tables").execute_in_process(instance=inst).success
        meta = {**inst.get_latest_materialization_event(AssetKey([SAMPLE, "model_trial"])).asset_materialization.metadata,
                **inst.get_latest_materialization_event(AssetKey([SAMPLE, "model_recommendation"]))
                .asset_materialization.metadata}
    return results, meta


def test_the_trial_runs_offline_end_to_end(layout, tmp_path):
    results, meta = run_trial(layout, tmp_path)
    assert len(results) == 4 and all(r.success for r in results)
    rows = cost_sql(layout, "SELECT model, cost_per_panel_usd, consistency, verdict, variations, platform "
                            "FROM model_trials")
    models = {r[0]: r for r in rows}
    # the cost study's validation plan, across two platforms
    assert {(m, r[5]) for m, r in models.items()} == {
        ("FLUX.2 [flash]", "fal"), ("FLUX.2 [dev]", "fal"), ("FLUX.2 [klein] 9B (BFL API)", "bfl"),
        ("FLUX.2 [pro] (BFL API)", "bfl")}
    # BFL bills inputs by their real megapixels (0.79 for a 1024x768 sheet), fal rounds each up to 1:
    # with every reference counted, klein 9B is the cheapest panel
    order = ["FLUX.2 [klein] 9B (BFL API)", "FLUX.2 [flash]", "FLUX.2 [dev]", "FLUX.2 [pro] (BFL API)"]
    costs = [models[m][1] for m in order]
    assert costs == sorted(costs) and all(0 <= r[2] <= 100 and r[4] == 5 for r in rows)
    # offline the scores compare preview stand-ins: no verdict, and no recommendation (not "train LoRA")
    assert all(r[3] == "not measured (preview stand-ins)" for r in rows)
    (action, model, reason), = cost_sql(layout, "SELECT action, model, reason FROM model_recommendation")
    assert (action, model) == ("none", None) and reason.startswith("offline previews are not measured")
    assert meta["recommendation"].value.startswith("**none**") and meta["trials"].value == 4
    assert meta["consistency"].value >= 0 and meta["cost_per_panel_usd"].value > 0
    assert meta["spent_usd"].value == 0 and meta["quote_usd"].value > 0  # offline: nothing billed, a quote
    ledger = list(read_rows(layout.ledger_dir))
    # 1 base + 5 variations per model; offline the base is the same preview for every model's text endpoint
    assert {r.asset for r in ledger} == {"model_trial"} and all(r.episode == "" for r in ledger)
    assert sum(r.status == "generated" for r in ledger) == 4 * 6
    assert cost_sql(layout, "SELECT count(*) FROM episode_spend")[0][0] == 0  # trial spend is no episode's
    assert cost_sql(layout, "SELECT generations FROM asset_spend WHERE asset = 'model_trial'")[0][0] == 24


def test_the_trial_on_fal_with_the_vision_judge(layout, tmp_path, fake_fal):
    edit_series(layout, **{"trial.candidates": ["fal-ai/flux-2/flash/edit"], "trial.scorer": "vision-judge"})
    fake_fal.configure(text_output='{"score": 93}')
    results, meta = run_trial(layout, tmp_path)
    assert results[0].success
    (model, consistency, verdict_, scorer), = cost_sql(layout, "SELECT model, consistency, verdict, scorer FROM model_trials")
    assert (model, consistency, verdict_, scorer) == ("FLUX.2 [flash]", 93, "production ready", "vision-judge")
    (action, chosen), = cost_sql(layout, "SELECT action, model FROM model_recommendation")
    assert (action, chosen) == ("use", "FLUX.2 [flash]")
    rows = list(read_rows(layout.ledger_dir))
    judged = [r for r in rows if r.endpoint == "fal-ai/any-llm/vision"]
    assert len(judged) == 5 and all(r.unit == "token" and r.billed_usd > 0 for r in judged)
    assert all(r.billed_usd > 0 for r in rows if r.status == "generated")  # the trial's own spend, billed
    counts = fake_fal.stats()["counts"]
    assert counts["paid"] == 1 + 5 + 5
    assert counts["image_urls_received"] == 5 * 1 + 5 * 2  # each variation its base; each judgement both images


def test_a_judge_answer_out_of_range_fails_the_trial_clearly(layout, tmp_path, fake_fal):
    edit_series(layout, **{"trial.candidates": ["fal-ai/flux-2/flash/edit"], "trial.scorer": "vision-judge"})
    fake_fal.configure(text_output="I think they look similar, maybe 8/10?")
    (tmp_path / "dagster").mkdir()
    job = build_definitions(layout).resolve_job_def(trial_job_name(SAMPLE))
    with DagsterInstance.local_temp(str(tmp_path / "dagster")) as inst:
        r = job.execute_in_process(instance=inst, partition_key=job.partitions_def.get_partition_keys()[0],
                                   raise_on_error=False)
    assert not r.success
    msg = next(e for e in r.all_events if e.is_step_failure).step_failure_data.error.message
    assert "trial of fal-ai/flux-2/flash/edit" in msg and 'expected {"score": 0-100}' in msg


# -- checks on every episode ----------------------------------------------------------------------

def checks(inst, episode: str = "ep01") -> dict[str, object]:
    """The latest evaluation of each panels check recorded against ``episode``'s partition."""
    from dagster._core.event_api import PartitionKeyFilter

    out = {}
    for name in ("cost_per_panel_target", "character_consistency"):
        key = AssetCheckKey(AssetKey([SAMPLE, "panels"]), name)
        record, = inst.event_log_storage.get_asset_check_execution_history(
            key, limit=1, partition_filter=PartitionKeyFilter(key=episode))
        assert record.partition == episode
        evaluation = record.event.dagster_event.event_specific_data
        assert evaluation.partition == episode and evaluation.description.startswith(f"{episode}: ")
        out[name] = evaluation
    return out


def test_checks_are_recorded_on_their_episode_and_name_it(layout, tmp_path):
    from dagster._core.event_api import PartitionKeyFilter

    (tmp_path / "d").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "d")) as inst:
        run_season(inst, build_definitions(layout), layout, SAMPLE, ["ep01"])
        cost = checks(inst, "ep01")["cost_per_panel_target"]
        assert cost.passed and cost.description.startswith("ep01: cost per panel $0.0")
        # nothing recorded against another episode, nor unpartitioned
        key = AssetCheckKey(AssetKey([SAMPLE, "panels"]), "cost_per_panel_target")
        for other in ("ep02", None):
            assert not inst.event_log_storage.get_asset_check_execution_history(
                key, limit=1, partition_filter=PartitionKeyFilter(key=other))
        strip, = inst.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(AssetKey([SAMPLE, "episode_strip"]), "webtoon_canvas_limits"), limit=1)
        assert strip.partition == "ep01" and strip.event.dagster_event.event_specific_data.description.startswith("ep01: ")


def test_checks_pass_or_warn_where_they_should_and_offline_consistency_is_not_measured(layout, tmp_path):
    (tmp_path / "d").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "d")) as inst:
        # thresholds no stand-in could meet: offline the consistency check still passes, unmeasured
        edit_series(layout, **{"trial.thresholds.acceptable": 100})
        run_season(inst, build_definitions(layout), layout, SAMPLE, ["ep01"])
        ok = checks(inst)
        assert ok["cost_per_panel_target"].passed  # $0.022 per panel against $0.05
        assert ok["cost_per_panel_target"].metadata["amortised_per_panel_usd"].value < 0.05
        c = ok["character_consistency"]
        assert c.passed and c.severity.value == "WARN"
        assert c.description.startswith("ep01: not measured (preview stand-ins)")
        assert c.metadata["measured"].value is False and c.metadata["panels_not_measured"].value == 10

        edit_series(layout, **{"budget.target_per_panel_usd": 0.01})
        run_season(inst, build_definitions(layout), layout, SAMPLE, ["ep01"])
        again = checks(inst)["cost_per_panel_target"]
        assert not again.passed and again.severity.value == "WARN"
        assert again.description.startswith("ep01: over the target $0.01")


def test_the_consistency_check_scores_a_models_panels_as_before(layout, tmp_path):
    """With a real provider the panels are scored and the check warns under the threshold (the
    offline sample's images stand in for a provider's: the check only sees where they came from)."""
    from webtoon_assets.assets.checks import ConsistencyScores
    from webtoon_assets.bible import load_series
    from webtoon_assets.manifests import ImageSet, Storyboard

    (tmp_path / "d").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "d")) as inst:
        run_season(inst, build_definitions(layout), layout, SAMPLE, ["ep01"])
    out = layout.output_dir(SAMPLE, "ep01")
    board = Storyboard.model_validate_json((out / "storyboard.json").read_text())
    sheets = ImageSet.model_validate_json((out / "character_sheets.json").read_text())
    panels = ImageSet.model_validate_json((out / "panels.json").read_text()).by_item()

    def check(acceptable: float, provider: str = "fal"):
        edit_series(layout, **{"trial.thresholds.acceptable": acceptable})
        scores = ConsistencyScores(load_series(layout, SAMPLE), board, sheets)
        for plan in board.panels:
            scores.add(plan.id, Path(panels[plan.id].path), provider)
        return scores.result()

    low = check(100)
    assert not low.passed and low.severity.value == "WARN" and low.metadata["measured"].value is True
    assert low.description.startswith("ep01: under 100% (palette-structure): ") and "p02 mira" in low.description
    assert 0 <= low.metadata["mean_consistency"].value < 100
    assert check(0).passed and "every character at or over 0%" in check(0).description
    assert check(100, provider="local").passed  # the same images, made offline: not measured


def test_a_finished_trial_run_asks_for_the_cost_tables(layout, tmp_path):
    """The trial job does not hold cost_tables (it would warn on every episode launch as an upstream
    never made); its run-status sensor requests the rebuild when a trial run succeeds."""
    from dagster import DagsterRunStatus, build_run_status_sensor_context

    defs = build_definitions(layout)
    job = defs.resolve_job_def(trial_job_name(SAMPLE))
    assert AssetKey("cost_tables") not in job.asset_layer.executable_asset_keys
    (tmp_path / "dagster").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "dagster")) as inst:
        result = job.execute_in_process(instance=inst, partition_key=job.partitions_def.get_partition_keys()[0])
        sensor = defs.resolve_sensor_def(f"{SAMPLE}__trial_costs")
        run = inst.get_run_by_id(result.run_id)
        event = next(e for e in inst.all_logs(result.run_id) if e.dagster_event and
                     e.dagster_event.event_type_value == "PIPELINE_SUCCESS").dagster_event
        context = build_run_status_sensor_context(sensor_name=sensor.name, dagster_event=event, dagster_instance=inst,
                                                  dagster_run=run)
        request = sensor(context)
    assert run.status == DagsterRunStatus.SUCCESS and request.run_key == f"after-{result.run_id}"
    assert sensor.job_name == "refresh_cost_tables"


def test_the_trial_spends_at_most_its_budget(layout, tmp_path):
    """The whole trial (every candidate) is capped (the study's $10 by default): a candidate whose
    requests do not fit what is left is refused whole, before anything is made."""
    edit_series(layout, **{"trial.budget_usd": 0.15})
    (tmp_path / "dagster").mkdir()
    job = build_definitions(layout).resolve_job_def(trial_job_name(SAMPLE))
    with DagsterInstance.local_temp(str(tmp_path / "dagster")) as inst:
        flash, dev = (job.execute_in_process(instance=inst, partition_key=k, raise_on_error=False)
                      for k in ("fal-ai__flux-2__flash__edit", "fal-ai__flux-2__edit"))
        assert flash.success  # 6 flash images: 1 + 5 x 2 MP at $0.005 = $0.055
        assert not dev.success  # 1 + 5 x 2 MP at $0.012 = $0.132 more: over the $0.095 left
        message = next(e for e in dev.all_events if e.is_step_failure).step_failure_data.error.message
        assert "pre-flight quote" in message and "model trial of fal-ai/flux-2/edit" in message
    rows = list(read_rows(layout.ledger_dir))
    assert sum(r.status == "generated" for r in rows) == 6
    assert sum(r.list_usd for r in rows if r.status == "generated") == Decimal("0.055")
    assert [r.status for r in rows if r.asset == "preflight"] == ["refused"]
