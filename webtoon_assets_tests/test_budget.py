"""Budgets are checked before any submission; a refusal is a ledger row and a clear error."""

from __future__ import annotations

import threading
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from webtoon_assets.gateway.budget import Budgets, BudgetExceeded
from webtoon_assets.ledger import read_rows
from webtoon_assets_tests.conftest import SAMPLE
from webtoon_assets.gateway import Gateway
from webtoon_assets_tests.test_gateway import CountingProvider, make_gateway, request


def flash(i: int):
    # 1024x1024 on flash = 1 MP = $0.005
    return request(endpoint="fal-ai/flux-2/flash", references=[],
                   arguments={"prompt": f"p{i}", "image_size": "square_hd", "seed": i})


def test_over_budget_refuses_before_submitting(tmp_path):
    provider = CountingProvider()
    budget = Budgets(tmp_path / "budgets.sqlite", tmp_path / "ledger", per_episode={("s", "ep01"): Decimal("0.012")})
    gw = make_gateway(tmp_path, provider, budget=budget)
    gw.generate(flash(1))
    gw.generate(flash(2))
    with pytest.raises(BudgetExceeded) as info:
        gw.generate(flash(3))
    assert provider.calls == 2  # the third was never submitted
    msg = str(info.value)
    assert "episode s/ep01 budget $0.012" in msg and "spent $0.010" in msg and "this needs $0.005" in msg
    assert "panels p01 (fal-ai/flux-2/flash" in msg
    rows = list(read_rows(tmp_path / "ledger"))
    assert [r.status for r in rows] == ["generated", "generated", "refused"]
    assert rows[-1].billed_usd == 0 and rows[-1].list_usd == Decimal("0.005") and "budget" in rows[-1].error
    assert gw.generate(flash(1)).status == "cached"  # hits are free, never refused


def test_spend_already_in_the_ledger_counts(tmp_path):
    make_gateway(tmp_path, CountingProvider()).generate(flash(1))  # an earlier run spent $0.005
    budget = Budgets(tmp_path / "budgets.sqlite", tmp_path / "ledger", per_episode={("s", "ep01"): Decimal("0.008")})
    with pytest.raises(BudgetExceeded, match=r"spent \$0.005"):
        make_gateway(tmp_path, CountingProvider(), budget=budget).generate(flash(2))


def test_in_flight_requests_are_reserved(tmp_path):
    provider = CountingProvider(delay=0.3)
    budget = Budgets(tmp_path / "budgets.sqlite", tmp_path / "ledger", per_episode={("s", "ep01"): Decimal("0.011")})
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
    budget = Budgets(tmp_path / "budgets.sqlite", tmp_path / "ledger", per_run_usd=Decimal("0.005"))
    gw = make_gateway(tmp_path, CountingProvider(), budget=budget)
    gw.generate(flash(1))
    with pytest.raises(BudgetExceeded, match=r"run cap \$0.005 \(WEBTOON_MAX_RUN_USD\)"):
        gw.generate(flash(2))


def test_an_episode_over_budget_is_refused_whole_before_anything_is_made(instance, defs, layout):
    """The pre-flight quote (issue 9): a 5000-panel script once spent $1.995 before the budget
    stopped it halfway. Now the storyboard quotes the whole episode first and refuses it whole."""
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
    assert failure.step_key == f"{SAMPLE}__storyboard"  # before style, sheets or panels
    msg = failure.step_failure_data.error.message
    assert "pre-flight quote" in msg and "episode lantern_street/ep01 budget $0.1" in msg
    assert "this needs $0.240" in msg and "the most expensive: panels p05 $0.025" in msg
    rows = list(read_rows(layout.ledger_dir))
    assert [(r.status, r.asset, r.list_usd) for r in rows] == [("refused", "preflight", Decimal("0.240"))]
    assert not (layout.store / "images").exists()  # nothing made, nothing half-made


# -- issue 9: budgets hold across processes ---------------------------------------------------------
def spend_three(gw, n: int) -> list[str]:
    """Process ``n``'s three requests on episode s/ep01 at once: "ok" or "refused" each."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> str:
        try:
            gw.generate(flash(i))
            return "ok"
        except BudgetExceeded:
            return "refused"
    with ThreadPoolExecutor(3) as pool:
        return list(pool.map(one, range(n * 10, n * 10 + 3)))


def _spend_in_child(root: str, n: int, out) -> None:
    root_ = Path(root)
    budget = Budgets(root_ / "budgets.sqlite", root_ / "ledger", per_episode={("s", "ep01"): Decimal("0.012")})
    out.put(spend_three(make_gateway(root_, CountingProvider(delay=0.4), budget=budget), n))


def test_processes_on_one_episode_never_together_exceed_its_budget(tmp_path):
    """Today two processes on one episode overshot its budget 1.7x (reservations lived in each
    process's memory). Reservations now live in one locked place."""
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_spend_in_child, args=(str(tmp_path), n, q)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    outcomes = [o for _ in procs for o in q.get(timeout=5)]
    rows = list(read_rows(tmp_path / "ledger"))
    spent = sum((r.counted_usd for r in rows), Decimal(0))
    assert outcomes.count("ok") == 2 and spent == Decimal("0.010") <= Decimal("0.012")
    assert [r.status for r in rows].count("refused") == 7


def test_the_run_cap_holds_across_the_step_processes_of_one_run(tmp_path):
    """WEBTOON_MAX_RUN_USD used to restart at zero in every step process."""
    def step() -> Gateway:  # each step of a run is its own process with its own gateway
        return make_gateway(tmp_path, CountingProvider(), run_id="run-1",
                            budget=Budgets(tmp_path / "budgets.sqlite", tmp_path / "ledger",
                                           per_run_usd=Decimal("0.010")))
    step().generate(flash(1))
    step().generate(flash(2))
    with pytest.raises(BudgetExceeded, match=r"run cap \$0.010.*spent \$0.010"):
        step().generate(flash(3))
    other_run = make_gateway(tmp_path, CountingProvider(), run_id="run-2",
                             budget=Budgets(tmp_path / "budgets.sqlite", tmp_path / "ledger",
                                            per_run_usd=Decimal("0.010")))
    assert other_run.generate(flash(4)).status == "generated"


def test_a_dead_processs_reservation_is_dropped(tmp_path):
    import subprocess
    import sys
    budget = Budgets(tmp_path / "budgets.sqlite", tmp_path / "ledger", per_episode={("s", "ep01"): Decimal("0.005")})
    budget.reserve("s", "ep01", Decimal("0.005"), "x")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    con = budget._connect()
    con.execute("UPDATE reservations SET pid = ?", (gone.pid,))  # as if a killed run had made it
    assert make_gateway(tmp_path, CountingProvider(), budget=budget).generate(flash(1)).status == "generated"


def test_episode_totals_survive_reruns_and_an_older_sums_file_is_recounted(tmp_path):
    """episode_spent_usd / episode_quote_usd come from the running sums: a re-run (cache hits) adds
    nothing. A budgets file written before these sums existed is recounted from the ledger once."""
    import sqlite3

    gw = make_gateway(tmp_path, CountingProvider())
    gw.generate(flash(1))
    gw.generate(flash(2))
    gw.generate(flash(1))  # a hit: free, and no new quote
    # an older budgets file: offsets past every row, no 'spent:'/'quote:' sums, no version
    con = sqlite3.connect(tmp_path / "budgets.sqlite")
    con.executescript("CREATE TABLE ledger_files (name TEXT PRIMARY KEY, offset INTEGER NOT NULL);"
                      "CREATE TABLE spent (scope TEXT PRIMARY KEY, usd TEXT NOT NULL);")
    for f in (tmp_path / "ledger").glob("*.jsonl"):
        con.execute("INSERT INTO ledger_files VALUES (?, ?)", (f.name, f.stat().st_size))
    con.execute("INSERT INTO spent VALUES ('episode:s/ep01', '0.010')")
    con.commit()
    con.close()
    budget = Budgets(tmp_path / "budgets.sqlite", tmp_path / "ledger")
    try:
        # offline-priced rows on a counting provider: billed = list here, so spent = quote = 2 x $0.005
        spent, quote = budget.episode_totals("s", "ep01")
        rows = list(read_rows(tmp_path / "ledger"))
        assert spent == sum((r.billed_usd for r in rows), Decimal(0))
        assert quote == Decimal("0.010")
        assert budget.episode_totals("s", "ep01") == (spent, quote)  # read twice: counted once
    finally:
        budget.close()
