"""Character LoRAs (series.yaml models.loras): priced per step, trained through the gateway once per
character, amortised like sheets, and sent with the panels; the decision tree's LoRA cost line."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import yaml
from dagster import DagsterInstance

from webtoon_assets.bible import load_series
from webtoon_assets.bible.models import Thresholds
from webtoon_assets.consistency.decision import Candidate, recommend
from webtoon_assets.consistency.lora_cost import lora_cost
from webtoon_assets.definitions import build_definitions
from webtoon_assets.demo import run_season
from webtoon_assets.gateway import Attribution, GenerationRequest, Lora, Reference
from webtoon_assets.ledger import read_rows
from webtoon_assets.paths import DataLayout
from webtoon_assets.pricing import load_pricebook, quote
from webtoon_assets.recipes.loras import load_record
from webtoon_assets_tests.conftest import SAMPLE, cost_sql, fresh_data_root


def opt_in(layout: DataLayout) -> None:
    path = layout.series_dir(SAMPLE) / "series.yaml"
    data = yaml.safe_load(path.read_text())
    data.setdefault("models", {})["loras"] = {"train": True, "steps": 1000, "endpoint": "fal-ai/flux-2/lora/edit"}
    data.setdefault("budget", {})["per_episode_usd"] = 40  # the episode that trains bears $6.40 a character
    path.write_text(yaml.safe_dump(data))


def lora_rows(layout: DataLayout, status: str = "generated") -> list:
    return [r for r in read_rows(layout.ledger_dir) if r.asset == "character_loras" and r.status == status]


def test_training_is_priced_per_step_and_lora_panels_like_flux2_dev():
    book = load_pricebook()
    assert quote("fal-ai/flux-2-trainer", {"steps": 1000}, book=book).usd == Decimal("6.40")
    assert quote("fal-ai/flux-2-trainer", {}, book=book).usd == Decimal("6.40")  # the default 1000 steps
    panel = {"image_size": {"width": 1024, "height": 1024}, "image_urls": ["a"]}
    assert (quote("fal-ai/flux-2/lora/edit", panel, book=book).usd
            == quote("fal-ai/flux-2/edit", panel, book=book).usd == Decimal("0.024"))
    for e in ("fal-ai/flux-2/lora", "fal-ai/flux-2/lora/edit"):
        assert book.entry(e).read.isoformat() == "2026-11-22" and "assumed" in book.entry(e).notes


def test_keys_depend_on_content_not_paths():
    who = Attribution(series="s", episode="e", asset="panels", item="p1")
    a = GenerationRequest(endpoint="fal-ai/flux-2/lora/edit", arguments={"prompt": "x"}, attribution=who,
                          loras=[Lora(role="lora:mira", path="/one/place.safetensors", sha256="ab" * 32)])
    b = a.model_copy(update={"loras": [Lora(role="lora:mira", path="https://cdn/x", sha256="ab" * 32)]})
    c = a.model_copy(update={"loras": [Lora(role="lora:mira", path="/one/place.safetensors", sha256="cd" * 32)]})
    plain = a.model_copy(update={"loras": []})
    assert a.key("fal") == b.key("fal") != c.key("fal") != plain.key("fal")
    # requests without LoRAs or training data keep their keys (nothing already stored is orphaned)
    assert plain.key("fal") == GenerationRequest(endpoint="fal-ai/flux-2/lora/edit", arguments={"prompt": "x"},
                                                 attribution=who).key("fal")
    t = GenerationRequest(endpoint="fal-ai/flux-2-trainer", arguments={"steps": 1000}, attribution=who,
                          training_data=Reference(role="training:mira", path="/a.zip", sha256="ef" * 32))
    assert t.key("fal") == t.model_copy(update={"training_data": Reference(
        role="training:mira", path="/b.zip", sha256="ef" * 32)}).key("fal")
    assert t.key("fal") != t.model_copy(update={"arguments": {"steps": 2000}}).key("fal")


def test_offline_season_trains_each_character_once_reusable_and_amortised(tmp_path: Path):
    layout = fresh_data_root(tmp_path / "data")
    opt_in(layout)
    (tmp_path / "dagster").mkdir()
    with DagsterInstance.local_temp(tempdir=str(tmp_path / "dagster")) as inst:
        defs = build_definitions(layout)
        run_season(inst, defs, layout, SAMPLE, ["ep01", "ep02"])
        made = lora_rows(layout)
        chars = {r.item for r in made}
        assert len(made) == len(chars) >= 1  # one paid row per character, over both episodes
        assert all(r.reusable and r.list_usd == Decimal("6.40") and r.billed_usd == 0 and r.provider == "local"
                   and "stand-in" in (r.note or "") for r in made)
        record = load_record(layout.output_dir(SAMPLE), SAMPLE)
        assert set(record.loras) == chars and all(lo.stand_in for lo in record.loras.values())
        assert all(Path(lo.path).is_file() for lo in record.loras.values())
        # panels of the series are made on the LoRA endpoint
        panels = [r for r in read_rows(layout.ledger_dir) if r.asset == "panels" and r.status == "generated"]
        assert panels and {r.endpoint for r in panels} <= {"fal-ai/flux-2/lora/edit", "fal-ai/flux-2/flash/edit"}
        assert "fal-ai/flux-2/lora/edit" in {r.endpoint for r in panels}
        # a re-run pays nothing: every LoRA is a cache hit
        run_season(inst, defs, layout, SAMPLE, ["ep01"])
        assert len(lora_rows(layout)) == len(made)
        assert lora_rows(layout, "cached")
        # amortised: the training is one-time, spread over the planned season
        (as_paid, amortised), = cost_sql(layout, "SELECT as_paid_usd, amortised_usd FROM amortization "
                                                 "WHERE episode = 'ep01' AND provider = 'local'")
        assert amortised < as_paid


def test_fal_trains_once_and_sends_panels_with_the_loras(fake_fal, tmp_path: Path):
    layout = fresh_data_root(tmp_path / "data")
    opt_in(layout)
    (tmp_path / "dagster").mkdir()
    with DagsterInstance.local_temp(tempdir=str(tmp_path / "dagster")) as inst:
        defs = build_definitions(layout)
        run_season(inst, defs, layout, SAMPLE, ["ep01"])
        run_season(inst, defs, layout, SAMPLE, ["ep01"])  # a re-run: nothing trained or made again
    stats = fake_fal.stats()["counts"]
    made = lora_rows(layout)
    assert stats["submitted:fal-ai/flux-2-trainer"] == len(made) == len({r.item for r in made}) >= 1
    assert all(r.provider == "fal" and r.billed_usd == Decimal("6.40") and r.reusable for r in made)
    assert stats["lora_downloads"] == len(made)
    assert stats["submitted:fal-ai/flux-2/lora/edit"] >= 1
    assert stats["loras_received"] == stats["loras_resolved"] >= 1  # each LoRA sent as an uploaded file's URL
    record = load_record(layout.output_dir(SAMPLE), SAMPLE)
    assert not any(lo.stand_in for lo in record.loras.values())
    assert all(Path(lo.path).read_bytes().startswith(b"FAKE-SAFETENSORS:") for lo in record.loras.values())


def test_decision_tree_says_what_lora_training_costs(layout: DataLayout):
    series = load_series(layout, SAMPLE)
    cost = lora_cost(series, load_pricebook(), panels_per_episode=10)
    n = len(series.characters)
    assert cost.total_usd == Decimal("6.40") * n
    assert cost.per_panel_usd == Decimal("6.40") * n / (series.planned_episodes * 10)
    weak = [Candidate("fal-ai/flux-2/flash/edit", "FLUX.2 [flash]", Decimal("0.02"), 72.0)]
    rec = recommend(weak, Thresholds(), Decimal("0.05"), lora=cost)
    assert rec.action == "train LoRA"
    assert f"{n} character(s) x 1000 steps x $0.0064/step" in rec.reason
    assert f"= ${Decimal('6.40') * n:.2f}, paid once" in rec.reason and "per panel amortised" in rec.reason
    assert recommend(weak, Thresholds(), Decimal("0.05")).reason.endswith("pivot to LoRA training")
    good = [Candidate("fal-ai/flux-2/flash/edit", "FLUX.2 [flash]", Decimal("0.02"), 95.0)]
    assert "training would cost" not in recommend(good, Thresholds(), Decimal("0.05"), lora=cost).reason


def test_lora_is_a_trial_candidate_trained_once_and_amortised(fake_fal, layout: DataLayout, tmp_path: Path):
    from webtoon_assets_tests.test_trial import edit_series, run_trial

    edit_series(layout, **{"trial.candidates": ["fal-ai/flux-2/flash/edit", "fal-ai/flux-2/lora/edit"],
                           "trial.scorer": "vision-judge"})
    fake_fal.configure(text_output='{"score": 91}')
    results, _ = run_trial(layout, tmp_path)
    assert all(r.success for r in results)
    counts = fake_fal.stats()["counts"]
    assert counts["submitted:fal-ai/flux-2-trainer"] == 1  # one LoRA, of the trial's character, on its base
    trained = [r for r in read_rows(layout.ledger_dir) if r.endpoint == "fal-ai/flux-2-trainer"]
    assert [(r.asset, r.status, r.billed_usd) for r in trained] == [("model_trial", "generated", Decimal("6.40"))]
    assert counts["submitted:fal-ai/flux-2/lora/edit"] == 5 and counts["loras_received"] >= 5  # every variation with it
    rows = {r[0]: r for r in cost_sql(layout, "SELECT endpoint, lora, cost_per_panel_usd, lora_training_per_panel_usd, "
                                              "consistency FROM model_trials")}
    flash, lora = rows["fal-ai/flux-2/flash/edit"], rows["fal-ai/flux-2/lora/edit"]
    assert flash[1] is False and flash[3] is None and lora[1] is True and lora[4] == 91
    series = load_series(layout, SAMPLE)
    from webtoon_assets.assets.loras import series_lora_cost

    amortised = series_lora_cost(layout, series).per_panel_usd
    assert lora[3] == round(amortised, 6) > 0  # every character's training, over the planned season's panels
    assert lora[2] > lora[3]  # and the panel itself on the LoRA endpoint
    spent = sum(r.billed_usd for r in read_rows(layout.ledger_dir))
    assert spent <= series.trial.budget_usd  # within the trial's $10

    # again: the LoRA and every image are in the store; the pre-flight quote sees them, nothing is paid
    paid = counts["paid"]
    results, _ = run_trial(layout, tmp_path)
    assert all(r.success for r in results) and fake_fal.stats()["counts"]["paid"] == paid
