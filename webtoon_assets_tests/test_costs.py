"""The DuckDB cost tables: what they say about the offline season, their invariants, and that
readers and concurrent runs never get in each other's way."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import threading
from decimal import Decimal

import duckdb
import pytest
import yaml
from pathlib import Path
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from webtoon_assets.costs import refresh_cost_tables
from webtoon_assets.costs.summary import season_summary
from webtoon_assets.definitions import build_definitions
from webtoon_assets.demo import run_season
from webtoon_assets.ledger import read_rows
from webtoon_assets.paths import DataLayout
from webtoon_assets_tests.conftest import SAMPLE, produced_season


def set_planned(layout, n: int) -> None:
    path = layout.series_dir(SAMPLE) / "series.yaml"
    data = yaml.safe_load(path.read_text())
    data["planned_episodes"] = n
    path.write_text(yaml.safe_dump(data))


def sql(layout, query: str, *params):
    con = duckdb.connect(str(layout.duckdb_path), read_only=True)
    try:
        return con.execute(query, list(params)).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    """The whole sample season, offline, with a planned length of 3: fully produced. Made once."""
    with produced_season(tmp_path_factory.mktemp("season"), planned=3) as made:
        yield made


@pytest.fixture
def season(produced, tmp_path, monkeypatch):
    """A private copy of the produced season, free to change."""
    layout = DataLayout(tmp_path / "data")
    shutil.copytree(produced[0].root, layout.root)
    monkeypatch.setenv("WEBTOON_DATA_DIR", str(layout.root))
    return layout


def test_offline_season_is_an_exact_quote(season):
    layout = season
    rows = list(read_rows(layout.ledger_dir))
    generated = [r for r in rows if r.status == "generated"]
    assert all(r.billed_usd == 0 for r in rows) and all(r.list_usd > 0 for r in generated)
    quote_total = sum(r.list_usd for r in generated)
    (billed, cost, n), = sql(layout, "SELECT sum(spent_usd), sum(counted_usd), count(*) FROM generations")
    assert billed == 0 and cost == quote_total and n == len(rows)
    assert sql(layout, "SELECT sum(counted_usd) FROM episode_spend")[0][0] == quote_total
    assert sql(layout, "SELECT sum(counted_usd) FROM asset_spend")[0][0] == quote_total
    assert sql(layout, "SELECT sum(counted_usd) FROM model_spend")[0][0] == quote_total
    # one row per attempt: hits are recorded, with what they saved
    (hits, saved), = sql(layout, "SELECT count(*), sum(saved_usd) FROM generations WHERE status = 'cached'")
    assert hits == 9 and saved > 0  # ep02: style, mira, tomas, lantern_shop; ep03: style, mira, juno, tomas, alley


def test_amortised_totals_equal_as_paid_over_a_fully_produced_season(season):
    layout = season
    (paid, amort), = sql(layout, "SELECT sum(as_paid_usd), sum(amortised_usd) FROM amortization")
    assert paid == pytest.approx(amort, abs=Decimal("0.00000003"))
    ep = {e: (p, a, once) for e, p, a, once in sql(
        layout, "SELECT episode, as_paid_usd, amortised_usd, one_time_made_usd FROM amortization")}
    # episode 1 bears the one-time artifacts it first made; amortising moves part of them to later episodes
    assert ep["ep01"][2] > ep["ep02"][2] > 0
    assert ep["ep01"][1] < ep["ep01"][0]
    # per panel both ways, against the series target
    for per_paid, per_amort, target, meets in sql(
            layout, "SELECT as_paid_per_panel_usd, amortised_per_panel_usd, target_per_panel_usd, meets_target "
                    "FROM amortization"):
        assert target == Decimal("0.05") and meets == (per_amort <= target) and per_paid > 0


def test_amortising_over_a_longer_planned_season_leaves_the_rest_to_later_episodes(season):
    layout = season
    set_planned(layout, 10)
    refresh_cost_tables(layout)
    (paid, amort, shared), = sql(layout, "SELECT sum(as_paid_usd), sum(amortised_usd), sum(shared_usd) FROM amortization")
    (one_time,), = sql(layout, "SELECT sum(counted_usd) FROM generations WHERE reusable AND status = 'generated'")
    assert shared == pytest.approx(one_time * Decimal(3) / Decimal(10), abs=Decimal("0.00000003"))
    assert amort < paid


def test_projection_is_one_time_plus_n_times_the_episode_average(season):
    layout = season
    set_planned(layout, 4)
    refresh_cost_tables(layout)
    rows = sql(layout, "SELECT episodes, one_time_usd, per_episode_usd, total_usd, per_panel_usd FROM projection")
    assert [r[0] for r in rows] == [1, 2, 3, 4, 10]
    (avg_ep, avg_panels), = sql(layout, "SELECT avg(episode_usd), avg(panels) FROM amortization")
    for n, one_time, per_ep, total, per_panel in rows:
        assert total == pytest.approx(one_time + n * per_ep, abs=Decimal("0.000002"))
        assert float(per_panel) == pytest.approx(float(total) / (n * avg_panels), rel=1e-4)
        assert float(per_ep) == pytest.approx(avg_ep, rel=1e-6)


def test_platform_whatif_reprices_real_usage_and_ranks_it(season):
    layout = season
    rows = sql(layout, "SELECT rank_all, platform, model, season_usd, per_panel_usd, panels, references_dropped "
                       "FROM platform_whatif ORDER BY rank_all")
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    models = {r[2]: r for r in rows}
    # the season was made (offline) on FLUX.2 [flash]: re-pricing it there gives the same total
    (quoted,), = sql(layout, "SELECT sum(quote_usd) FROM generations")
    assert models["FLUX.2 [flash]"][3] == quoted and models["FLUX.2 [flash]"][5] == 30
    # every image model of the study is compared, on every platform
    assert {"FLUX.2 [turbo]", "FLUX.2 [dev]", "FLUX.2 [pro]", "Nano Banana Pro", "Seedream 4.5",
            "FLUX.2 [pro] (BFL API)", "Gemini 3 Pro Image (direct)"} <= set(models)
    assert models["FLUX.1 [schnell]"][6] > 0  # text-only models drop the references, and say so


def test_platform_whatif_ranks_by_the_10_episode_total_among_models_taking_every_reference(season):
    layout = season
    rows = sql(layout, "SELECT rank, rank_all, model, ten_episode_usd, references_dropped FROM platform_whatif "
                       "WHERE usage_from = 'local' ORDER BY rank_all")
    comparable = [r for r in rows if r[4] == 0]
    assert len(comparable) >= 3 and any(r[4] > 0 for r in rows)
    # contiguous ranks 1, 2, 3, ... among the models that take every reference; the others have none
    assert [r[0] for r in comparable] == list(range(1, len(comparable) + 1))
    assert all(r[0] is None for r in rows if r[4] > 0)
    # ranked by the 10-episode total, not by $/panel
    assert [r[3] for r in rows] == sorted(r[3] for r in rows)
    text = season_summary(layout.duckdb_path, SAMPLE)
    listed = text[text.index("cheapest platforms"):].splitlines()[1:4]
    assert [line.split()[0] for line in listed] == ["1.", "2.", "3."]
    for line, (_, _, model, ten, _) in zip(listed, comparable):
        assert model in line and f"10 episodes ${ten:.2f}" in line


def test_materializations_carry_the_cost_numbers(produced):
    meta = produced[1].get_latest_materialization_event(AssetKey([SAMPLE, "panels"])).asset_materialization.metadata
    for key in ("spent_usd", "quote_usd", "saved_usd", "episode_spent_usd", "episode_quote_usd", "credits",
                "generations", "cache_hits", "megapixels"):
        assert isinstance(meta[key].value, (int, float)), key
    assert meta["spent_usd"].value == 0 and meta["quote_usd"].value > 0 and meta["generations"].value == 9
    assert "| p01 | paid | `fal-ai/flux-2/flash/edit` |" in meta["items"].value


def test_cost_tables_is_the_season_dashboard(produced):
    """One rebuild per run, as an asset: its materialization has the per-episode table and numbers
    that plot; each episode's cost numbers on panels are the episode to date, per partition."""
    layout, inst = produced
    meta = inst.get_latest_materialization_event(AssetKey("cost_tables")).asset_materialization.metadata
    rows = {r.data["episode"]: r.data for r in meta["dashboard"].value.records}
    assert sorted(rows) == ["ep01", "ep02", "ep03"]
    quotes = sql(layout, "SELECT episode, quote_usd FROM episode_spend WHERE series = 'lantern_street'")
    assert {e: round(rows[e]["quote_usd"], 6) for e in rows} == {e: float(q) for e, q in quotes}
    assert all(r["spent_usd"] == 0 and r["meets_target"] and r["budget_left_usd"] <= r["budget_usd"]
               for r in rows.values())
    season_quote = sum(float(q) for _, q in quotes)
    assert meta["lantern_street/local/quote_usd"].value == pytest.approx(season_quote)
    assert meta["lantern_street/local/episodes_made"].value == 3
    assert 0 < meta["lantern_street/local/amortised_per_panel_usd"].value <= 0.05
    (projected,), = sql(layout, "SELECT total_usd FROM projection p JOIN series_info s USING (series) "
                                "WHERE p.episodes = s.planned_episodes")
    assert meta["lantern_street/local/projected_season_usd"].value == float(projected)
    # each run rebuilt the tables once: one materialization per episode run, none per step
    assert len(inst.fetch_materializations(AssetKey("cost_tables"), limit=100).records) == 3
    for episode, quote in quotes:
        record, = inst.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey([SAMPLE, "panels"]), asset_partitions=[episode]), limit=1).records
        panel_meta = record.asset_materialization.metadata
        assert panel_meta["episode_quote_usd"].value == float(quote) and panel_meta["episode_spent_usd"].value == 0


def test_summary_prints_every_part(season):
    text = season_summary(season.duckdb_path, SAMPLE)
    for part in ("ep01", "ep03", "as paid", "amortised", "10-episode projection", "cheapest platforms", "met"):
        assert part in text


def test_a_reader_holding_the_file_never_blocks_a_refresh(season):
    layout = season
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, duckdb
        con = duckdb.connect({str(layout.duckdb_path)!r}, read_only=True)
        print(con.execute("SELECT count(*) FROM generations").fetchone()[0], flush=True)
        sys.stdin.readline()  # hold the file open until told
        print(con.execute("SELECT count(*) FROM generations").fetchone()[0], flush=True)
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        before = int(holder.stdout.readline())
        # a new episode's run writes the ledger and refreshes the file while the reader holds it
        (layout.episodes_dir(SAMPLE) / "ep04.txt").write_text(
            (layout.episodes_dir(SAMPLE) / "ep03.txt").read_text().replace("Running.", "Running again."))
        with DagsterInstance.ephemeral() as inst:
            run_season(inst, build_definitions(layout), layout, SAMPLE, ["ep04"])
        assert refresh_cost_tables(layout) is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert int(holder.stdout.readline()) == before  # the reader kept its snapshot, undisturbed
        assert holder.wait(30) == 0
    finally:
        holder.kill()
    (after,), = sql(layout, "SELECT count(*) FROM generations")
    assert after > before
    assert ("ep04",) in sql(layout, "SELECT episode FROM amortization")


def test_concurrent_refreshes_never_fail(season):
    layout = season
    results = []
    threads = [threading.Thread(target=lambda: results.append(refresh_cost_tables(layout, log=pytest.fail)))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [layout.duckdb_path] * 6
    assert sql(layout, "SELECT count(*) FROM amortization")[0][0] == 3
    assert not list(layout.root.glob(".webtoon.duckdb.*.tmp*"))


def test_a_users_left_over_wal_is_never_replayed_onto_the_rebuilt_file(layout):
    """A read-write session killed with uncheckpointed writes leaves `webtoon.duckdb.wal`; replayed
    onto the rebuilt file it would resurrect the user's stale tables (or corrupt the file)."""
    import subprocess
    import sys

    import duckdb

    from webtoon_assets.costs import refresh_cost_tables
    db = refresh_cost_tables(layout)
    subprocess.run([sys.executable, "-c", f"import duckdb, os; c = duckdb.connect({str(db)!r}); "
                    "c.execute('CREATE TABLE mine (x INT)'); c.execute('INSERT INTO mine VALUES (1)'); os._exit(0)"],
                   check=True)
    assert Path(f"{db}.wal").exists()
    refresh_cost_tables(layout)
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = {t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    finally:
        con.close()
    assert "mine" not in tables and "generations" in tables


def test_a_quoted_value_is_a_literal_not_sql():
    import duckdb

    from webtoon_assets.costs.sql import literal

    evil = "ep01' OR '1'='1"
    con = duckdb.connect()
    assert con.execute(f"SELECT {literal(evil)}").fetchone() == (evil,)
    assert con.execute(f"SELECT count(*) FROM (VALUES ('ep01')) t(e) WHERE e = {literal(evil)}").fetchone() == (0,)
