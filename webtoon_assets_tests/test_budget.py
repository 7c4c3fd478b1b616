"""Budgets are checked before any submission; a refusal is a ledger row and a clear error."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
import yaml

from webtoon_assets.gateway.budget import Budget, BudgetExceeded
from webtoon_assets.ledger import read_rows
from webtoon_assets_tests.conftest import SAMPLE
from webtoon_assets_tests.test_gateway import CountingProvider, make_gateway, request


def flash(i: int):
    # 1024x1024 on flash = 1 MP = $0.005
    return request(endpoint="fal-ai/flux-2/flash", references=[],
                   arguments={"prompt": f"p{i}", "image_size": "square_hd", "seed": i})


def test_over_budget_refuses_before_submitting(tmp_path):
    provider = CountingProvider()
    budget = Budget(tmp_path / "ledger", per_episode={("s", "ep01"): Decimal("0.012")})
    gw = make_gateway(tmp_path, provider, budget=budget)
    gw.generate(flash(1))
    gw.generate(flash(2))
    with pytest.raises(BudgetExceeded) as info:
        gw.generate(flash(3))
    assert provider.calls == 2  # the third was never submitted
    msg = str(info.value)
    assert "episode s/ep01 budget $0.012" in msg and "spent $0.010" in msg and "this request $0.005" in msg
    assert "panels p01 (fal-ai/flux-2/flash" in msg
    rows = list(read_rows(tmp_path / "ledger"))
    assert [r.status for r in rows] == ["generated", "generated", "refused"]
    assert rows[-1].billed_usd == 0 and rows[-1].list_usd == Decimal("0.005") and "budget" in rows[-1].error
    assert gw.generate(flash(1)).status == "cached"  # hits are free, never refused


def test_spend_already_in_the_ledger_counts(tmp_path):
    make_gateway(tmp_path, CountingProvider()).generate(flash(1))  # an earlier run spent $0.005
    budget = Budget(tmp_path / "ledger", per_episode={("s", "ep01"): Decimal("0.008")})
    with pytest.raises(BudgetExceeded, match=r"spent \$0.005"):
        make_gateway(tmp_path, CountingProvider(), budget=budget).generate(flash(2))


def test_in_flight_requests_are_reserved(tmp_path):
    provider = CountingProvider(delay=0.3)
    budget = Budget(tmp_path / "ledger", per_episode={("s", "ep01"): Decimal("0.011")})
    gw = make_gateway(tmp_path, provider, budget=budget)
    outcomes = []

    def go(i):
        try:
            gw.generate(flash(i))
            outcomes.append("ok")
        except BudgetExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok", "ok", "refused", "refused"]
    assert provider.calls == 2


def test_run_cap(tmp_path):
    budget = Budget(tmp_path / "ledger", per_run_usd=Decimal("0.005"))
    gw = make_gateway(tmp_path, CountingProvider(), budget=budget)
    gw.generate(flash(1))
    with pytest.raises(BudgetExceeded, match=r"run cap \$0.005 \(WEBTOON_MAX_RUN_USD\)"):
        gw.generate(flash(2))


def test_an_offline_episode_over_budget_fails_with_the_budget_named(instance, defs, layout):
    path = layout.series_dir(SAMPLE) / "series.yaml"
    data = yaml.safe_load(path.read_text())
    data["budget"]["per_episode_usd"] = 0.10  # ep01 would cost $0.24 at list price
    path.write_text(yaml.safe_dump(data))
    from webtoon_assets.definitions import build_definitions
    job = build_definitions(layout).resolve_job_def(f"{SAMPLE}__season")
    instance.add_dynamic_partitions(f"{SAMPLE}__episodes", ["ep01"])
    result = job.execute_in_process(instance=instance, partition_key="ep01", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == f"{SAMPLE}__panels"
    msg = failure.step_failure_data.error.message
    assert "budget refused panels" in msg and "episode lantern_street/ep01 budget $0.1" in msg and "spent $" in msg
    rows = list(read_rows(layout.ledger_dir))
    refused = [r for r in rows if r.status == "refused"]
    assert refused and all(r.billed_usd == 0 for r in rows)
    made = sum(r.cost_usd for r in rows)
    assert made <= Decimal("0.10")  # never past the budget, even at list price
    assert not any((layout.output_dir(SAMPLE, "ep01") / "panels" / f"{r.item}.png").exists() for r in refused)
