"""Issue 14: the money path over several machines, its coordination in one PostgreSQL database
(WEBTOON_DATABASE_URL) and its image store on a path every machine reaches (WEBTOON_STORE_DIR).

Against a real PostgreSQL server started in a temp dir (pg_harness; skipped, with the reason, where
PostgreSQL is not installed): the ledger table (append, read, find; append-only), request locks
across processes (and a killed holder's lock freed), budgets across processes (and a killed
process's reservation dropped), the submission journal across a crash, the cost tables' export; and
two worker processes, each with its own Dagster home and data root, backfilling the same three
episodes against the fake fal at once: one payment per distinct request, the books equal to what
fal billed, no lock error, the budgets held, and the cost tables those of the same season made on
one machine with the file defaults."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest
import yaml

from webtoon_assets.costs import refresh_cost_tables
from webtoon_assets.gateway import Gateway, ImageStore
from webtoon_assets.gateway.budget import BudgetExceeded
from webtoon_assets.gateway.coordination import open_coordination
from webtoon_assets.gateway.coordination import postgres as pg
from webtoon_assets.gateway.coordination.postgres import PgCoordination, export_ledger
from webtoon_assets.gateway.providers import select_provider
from webtoon_assets.gateway.retry import AttemptPolicy, GenerationFailed
from webtoon_assets.ledger import Ledger, LedgerRow, read_rows
from webtoon_assets.paths import REPO_ROOT, DataLayout
from webtoon_assets.pricing import load_pricebook
from webtoon_assets_tests.conftest import SAMPLE, cost_sql, fresh_data_root
from webtoon_assets_tests.fal_harness import start_fake_fal
from webtoon_assets_tests.pg_harness import postgres  # noqa: F401 - the session fixture
from webtoon_assets_tests.test_fal_faults import PAID, panel_request
from webtoon_assets_tests.test_gateway import CountingProvider

BOOK = REPO_ROOT / "data" / "pricebook.yaml"


@pytest.fixture
def pg_url(postgres, monkeypatch):  # noqa: F811
    """A new empty database for one test; this process uses the file defaults unless told."""
    monkeypatch.delenv("WEBTOON_DATABASE_URL", raising=False)
    monkeypatch.delenv("WEBTOON_STORE_DIR", raising=False)
    return postgres.create_database(f"money_{uuid.uuid4().hex[:12]}")


def row(i: int = 0, **kw) -> LedgerRow:
    base = dict(time=dt.datetime.now(dt.timezone.utc), run_id="run-1", series="s", episode="ep01", asset="panels",
                item=f"p{i:02d}", reusable=False, provider="fal", endpoint="fal-ai/flux-2/flash",
                request_key=f"{i:064x}", status="generated", billed_usd=Decimal("0.005"),
                list_usd=Decimal("0.005"), credits=Decimal("0.600"), provider_request_id=f"req-{i}")
    return LedgerRow(**{**base, **kw})


def admin(url: str):
    con = psycopg2.connect(url)
    con.autocommit = True
    return con


def child(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO_ROOT)


def wait_for(condition, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- the ledger table -------------------------------------------------------------------------------
def test_the_ledger_table_appends_reads_and_finds_rows_as_their_lines(pg_url):
    c = PgCoordination(pg_url)
    rows = [row(1), row(2, status="cached", billed_usd=Decimal(0), provider_request_id=None),
            row(3, status="unknown", billed_usd=Decimal("0.0123456789"), error="lost"),
            row(4, provider="local", billed_usd=Decimal(0), list_usd=Decimal("0.215"))]
    for r in rows:
        c.ledger.append(r)
    c.ledger.append(rows[0])  # appended again after a lost answer to a commit: kept once
    assert list(c.ledger.rows()) == rows
    assert [r.id for r in c.ledger.find(rows[0].request_key)] == [rows[0].id]
    assert [r.id for r in c.ledger.find("req-3")] == [rows[2].id]
    assert list(c.ledger.find("nothing")) == []
    with admin(pg_url) as con, con.cursor() as cur:
        cur.execute("SELECT line, billed_usd, counted_usd, list_usd FROM webtoon_ledger ORDER BY id")
        stored = cur.fetchall()
    assert [s[0] for s in stored] == [r.to_line() for r in rows]  # the line, byte for byte, with its checksum
    assert [s[1:] for s in stored] == [(r.billed_usd, r.counted_usd, r.list_usd) for r in rows]  # numeric
    assert all(isinstance(v, Decimal) for s in stored for v in s[1:])
    c.close()


def test_the_ledger_table_is_append_only(pg_url):
    c, kept = PgCoordination(pg_url), row(1)
    c.ledger.append(kept)
    con = admin(pg_url)
    for sql in ("UPDATE webtoon_ledger SET billed_usd = 0", "DELETE FROM webtoon_ledger", "TRUNCATE webtoon_ledger"):
        with con.cursor() as cur, pytest.raises(psycopg2.Error, match="append-only"):
            cur.execute(sql)
    con.close()
    assert list(c.ledger.rows()) == [kept]
    c.close()


def test_a_damaged_line_is_reported_not_counted(pg_url):
    c = PgCoordination(pg_url)
    c.ledger.append(row(1))
    c.ledger.append(row(2))
    con = admin(pg_url)
    with con.cursor() as cur:  # only someone bypassing the trigger could change a row
        cur.execute("ALTER TABLE webtoon_ledger DISABLE TRIGGER webtoon_ledger_no_change; "
                    "UPDATE webtoon_ledger SET line = replace(line, '0.005', '0.001') WHERE id = 2; "
                    "ALTER TABLE webtoon_ledger ENABLE TRIGGER webtoon_ledger_no_change")
    con.close()
    problems: list = []
    assert [r.item for r in c.ledger.rows(problems)] == ["p01"]
    assert [(str(p.path), p.line) for p in problems] == [("webtoon_ledger", 2)] and "checksum" in problems[0].reason
    c.close()


# -- request locks ------------------------------------------------------------------------------------
HOLD = """
import sys, time, pathlib
from webtoon_assets.gateway.coordination.postgres import Database, PgLocks
with PgLocks(Database(sys.argv[1])).lock(sys.argv[2]):
    pathlib.Path(sys.argv[3]).touch()
    time.sleep(600)
"""

TURNS = """
import os, sys, time
from webtoon_assets.gateway.coordination.postgres import Database, PgLocks
locks = PgLocks(Database(sys.argv[1]))
for _ in range(15):
    with locks.lock(sys.argv[2]):
        with open(sys.argv[3], "a") as f:
            f.write(f"in {os.getpid()}\\n"); f.flush()
            time.sleep(0.01)
            f.write(f"out {os.getpid()}\\n")
"""


def test_a_request_lock_excludes_other_processes(pg_url, tmp_path):
    key, log = "ab" * 32, tmp_path / "turns.log"
    procs = [child(TURNS, pg_url, key, str(log)) for _ in range(2)]
    for p in procs:
        assert p.wait(60) == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 60
    for enter, leave in zip(lines[::2], lines[1::2]):  # never two holders at once
        assert enter.startswith("in ") and leave == "out " + enter[3:]


def test_a_killed_holders_request_lock_is_freed(pg_url, tmp_path):
    key, held = "cd" * 32, tmp_path / "held"
    holder = child(HOLD, pg_url, key, str(held))
    try:
        wait_for(held.exists, what="the child's lock")
        c = PgCoordination(pg_url)
        got = threading.Event()

        def take():
            with c.lock(key):
                got.set()
        waiter = threading.Thread(target=take, daemon=True)
        waiter.start()
        assert not got.wait(0.5)  # blocked: no error, no timeout
        with c.lock("ef" * 32):  # another key is not
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        assert got.wait(15), "the lock of a killed process was not freed"
        waiter.join(5)
        assert c.locks.lost == 0
        c.close()
    finally:
        holder.kill()


# -- budgets ------------------------------------------------------------------------------------------

def _spend_in_child(url: str, root: str, n: int, out) -> None:
    from webtoon_assets_tests.test_budget import spend_three
    c = PgCoordination(url)
    budget = c.budgets(per_episode={("s", "ep01"): Decimal("0.012")})
    gw = Gateway(ImageStore(Path(root) / "store"), CountingProvider(delay=0.4), c.ledger, load_pricebook(BOOK),
                 budget=budget, locks=c.lock, submissions=c.submissions)
    out.put(spend_three(gw, n))
    budget.close()
    c.close()


def test_processes_on_one_episode_never_together_exceed_its_budget(pg_url, tmp_path):
    """Three processes (as on three machines), three requests each, one episode budget of $0.012."""
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_spend_in_child, args=(pg_url, str(tmp_path), n, q)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    outcomes = [o for _ in procs for o in q.get(timeout=5)]
    rows = list(PgCoordination(pg_url).ledger.rows())
    spent = sum((r.counted_usd for r in rows), Decimal(0))
    assert outcomes.count("ok") == 2 and spent == Decimal("0.010") <= Decimal("0.012")
    assert [r.status for r in rows].count("refused") == 7
    assert "in flight" in next(r.error for r in rows if r.status == "refused")


RESERVE = """
import sys, time, pathlib
from decimal import Decimal
from webtoon_assets.gateway.coordination.postgres import PgCoordination
b = PgCoordination(sys.argv[1]).budgets(per_episode={("s", "ep01"): Decimal("0.005")})
b.reserve("s", "ep01", Decimal("0.005"), "held by a process about to be killed")
pathlib.Path(sys.argv[2]).touch()
time.sleep(600)
"""


def test_a_killed_processs_reservation_is_dropped(pg_url, tmp_path):
    held = tmp_path / "held"
    holder = child(RESERVE, pg_url, str(held))
    try:
        wait_for(held.exists, what="the child's reservation")
        budget = PgCoordination(pg_url).budgets(per_episode={("s", "ep01"): Decimal("0.005")})
        with pytest.raises(BudgetExceeded, match=r"in flight \$0.005 \(every process\)"):
            budget.reserve("s", "ep01", Decimal("0.001"), "x")
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)

        def fits() -> bool:
            try:
                return budget.reserve("s", "ep01", Decimal("0.005"), "y") is not None
            except BudgetExceeded:
                return False
        wait_for(fits, timeout=15, what="the dead process's reservation to go")
        budget.close()
    finally:
        holder.kill()


def test_the_run_cap_and_episode_totals_come_from_the_ledger_table(pg_url):
    c = PgCoordination(pg_url)
    c.ledger.append(row(1, run_id="run-1"))
    c.ledger.append(row(2, run_id="run-1", status="cached", billed_usd=Decimal(0)))
    c.ledger.append(row(3, run_id="run-2", episode="ep02"))
    budget = c.budgets("run-1", per_run_usd=Decimal("0.010"))
    budget.reserve("s", "ep09", Decimal("0.005"), "fits")
    with pytest.raises(BudgetExceeded, match=r"run cap \$0.010.*spent \$0.005, in flight \$0.005"):
        budget.reserve("s", "ep09", Decimal("0.001"), "over")
    assert budget.episode_totals("s", "ep01") == (Decimal("0.005"), Decimal("0.005"))
    assert budget.episode_totals("s", "ep03") == (0, 0)
    budget.close()
    c.close()


# -- the submission journal ---------------------------------------------------------------------------
def pg_gateway(tmp_path: Path, url: str) -> tuple[Gateway, PgCoordination]:
    c = PgCoordination(url)
    gw = Gateway(ImageStore(tmp_path / "store"), select_provider("", None, tmp_path / "store"), c.ledger,
                 load_pricebook(BOOK), retry=AttemptPolicy(attempts=3, base_seconds=0.01, nsfw_retries=2),
                 locks=c.lock, submissions=c.submissions)
    return gw, c


def _books(c: PgCoordination, fake) -> list[tuple[str, Decimal]]:
    rows = list(c.ledger.rows())
    assert sum((r.billed_usd for r in rows), Decimal(0)) == Decimal(fake.stats()["billed_usd"])
    return [(r.status, r.billed_usd) for r in rows]


def test_an_intent_left_by_a_killed_run_is_an_unknown_the_next_run_records(pg_url, fake_fal, tmp_path):
    request = panel_request()
    key = request.key("fal")
    c0 = PgCoordination(pg_url)
    c0.submissions.open(key).submitting(request.endpoint, 11)  # as a process killed mid-submit leaves it
    assert c0.submissions.open(key).orphaned_intent is not None
    gw, c = pg_gateway(tmp_path, pg_url)
    try:
        assert gw.generate(request).status == "generated"
    finally:
        gw.provider.close()
    assert [(s, b) for s, b in [(r.status, r.billed_usd) for r in c.ledger.rows()]] == [("unknown", PAID),
                                                                                      ("generated", PAID)]
    assert "crashed while submitting" in next(iter(c.ledger.rows())).error
    assert c.submissions.pending() == []
    assert not (tmp_path / "store" / "pending").exists()  # the journal is the table


async def _die_waiting(self, handle):
    from webtoon_assets.gateway.providers.base import ProviderError
    raise ProviderError("killed", retryable=False, billed=False, request_id=handle.request_id, resumable=True)


def test_a_crash_after_acceptance_is_resumed_from_the_table_not_paid_again(pg_url, fake_fal, tmp_path):
    gw, c = pg_gateway(tmp_path, pg_url)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(gw.provider), "_wait", _die_waiting)
        with pytest.raises(GenerationFailed, match="killed"):
            gw.generate(panel_request())
    gw.provider.close()
    (key,) = c.submissions.pending()  # the accepted request's handle stays journalled
    assert c.submissions.open(key).resume["request_id"]
    gw2, _ = pg_gateway(tmp_path, pg_url)  # "the next run", on any machine
    try:
        assert gw2.generate(panel_request()).status == "generated"
    finally:
        gw2.provider.close()
    counts = fake_fal.stats()["counts"]
    assert counts["submitted"] == 1 and counts["paid"] == 1
    assert _books(c, fake_fal) == [("failed", 0), ("generated", PAID)]
    assert c.submissions.pending() == []


def test_a_request_id_is_billed_once_when_a_crash_came_after_its_row(pg_url, fake_fal, tmp_path):
    from webtoon_assets_tests.test_money_path import crash_after_the_row
    gw, c = pg_gateway(tmp_path, pg_url)
    crash_after_the_row(gw)
    gw.provider.close()
    gw2, _ = pg_gateway(tmp_path, pg_url)
    try:
        assert gw2.generate(panel_request()).status == "generated"
    finally:
        gw2.provider.close()
    first, second = c.ledger.rows()
    assert (first.billed_usd, second.billed_usd) == (PAID, 0) and first.id in second.note  # found by ledger.find
    assert fake_fal.stats()["counts"]["paid"] == 1
    assert _books(c, fake_fal) == [("generated", PAID), ("generated", 0)]


def test_costs_verify_and_reconcile_read_and_settle_the_database_ledger(pg_url, fake_fal, tmp_path):
    """`webtoon costs`, `ledger verify` and `reconcile` with WEBTOON_DATABASE_URL: an unknown outcome in
    the table is named, then settled by a `reconciled` row appended to the table."""
    from webtoon_assets_tests.test_money_path import ADMIN_KEY, _webtoon, leave_an_unknown
    layout = fresh_data_root(tmp_path / "data")
    gw, c = pg_gateway(tmp_path, pg_url)
    leave_an_unknown(gw, fake_fal)
    env = {**fake_fal.env(), "WEBTOON_DATA_DIR": str(layout.root), "FAL_ADMIN_KEY": ADMIN_KEY,
           "WEBTOON_DATABASE_URL": pg_url}
    costs = _webtoon("costs", env=env)
    assert "Unknown outcomes: 1 paid call(s)" in costs.stdout, costs.stdout + costs.stderr
    verify = _webtoon("ledger", "verify", env=env)
    assert verify.returncode == 0 and "webtoon_ledger): 2 whole row(s), 0 damaged" in verify.stdout, verify.stdout
    settled = _webtoon("reconcile", env=env)
    assert settled.returncode == 0, settled.stdout + settled.stderr
    assert "billed (correction $0)" in settled.stdout
    assert [r.status for r in c.ledger.rows()] == ["unknown", "generated", "reconciled"]
    assert "Unknown outcomes" not in _webtoon("costs", env=env).stdout
    assert not list(layout.ledger_dir.glob("*.jsonl"))  # nothing went to the files
    assert _books(c, fake_fal) == [("unknown", PAID), ("generated", PAID), ("reconciled", 0)]
    c.close()


# -- the cost tables' export --------------------------------------------------------------------------
def test_the_export_appends_only_new_rows_and_cuts_back_a_torn_one(pg_url, tmp_path, monkeypatch):
    monkeypatch.setattr(pg, "EXPORT_SEGMENT_BYTES", 1500)  # a new file every few rows
    c = PgCoordination(pg_url)
    rows = [row(i) for i in range(12)]
    for r in rows[:5]:
        c.ledger.append(r)
    folder = export_ledger(c.db, tmp_path / "mirror")

    def mirrored() -> str:
        return "".join(p.read_text() for p in sorted(folder.glob("*.jsonl")))
    assert mirrored() == "".join(r.to_line() for r in rows[:5])
    newest = sorted(folder.glob("*.jsonl"))[-1]
    with open(newest, "a") as f:  # an export killed mid-line
        f.write('{"id": "torn')
    (folder / "999999999999999.jsonl").write_text("a file the state never recorded\n")
    for r in rows[5:]:
        c.ledger.append(r)
    assert export_ledger(c.db, tmp_path / "mirror") == folder
    assert mirrored() == "".join(r.to_line() for r in rows)
    assert len(list(folder.glob("*.jsonl"))) > 2
    assert [r.id for r in read_rows(folder)] == [r.id for r in rows]
    c.close()


def test_cost_tables_from_the_database_equal_those_from_the_files(pg_url, tmp_path):
    files, database = fresh_data_root(tmp_path / "files"), fresh_data_root(tmp_path / "db")
    ledger, c = Ledger(files.ledger_dir), PgCoordination(pg_url)
    for i in range(6):
        r = row(i, series=SAMPLE, episode=f"ep0{1 + i % 3}", asset="character_sheets" if i < 2 else "panels",
                reusable=i < 2)
        ledger.append(r)
        c.ledger.append(r)
    ledger.close()
    assert refresh_cost_tables(files, log=pytest.fail) and refresh_cost_tables(database, log=pytest.fail,
                                                                                database_url=pg_url)
    q = "SELECT * EXCLUDE (ledger_file) FROM generations ORDER BY id"
    assert cost_sql(files, q) == cost_sql(database, q) and len(cost_sql(files, q)) == 6
    for view in ("episode_spend", "asset_spend", "model_spend", "amortization", "projection"):
        assert cost_sql(files, f"SELECT * FROM {view} ORDER BY ALL") == cost_sql(database, f"SELECT * FROM {view} ORDER BY ALL")
    c.ledger.append(row(7, series=SAMPLE, episode="ep03"))  # the next refresh reads only the new row
    assert refresh_cost_tables(database, log=pytest.fail, database_url=pg_url)
    assert cost_sql(database, "SELECT count(*) FROM generations") == [(7,)]
    c.close()


def test_unset_means_the_files_of_one_machine(tmp_path, monkeypatch):
    monkeypatch.delenv("WEBTOON_DATABASE_URL", raising=False)
    monkeypatch.delenv("WEBTOON_STORE_DIR", raising=False)
    layout = DataLayout(tmp_path)
    c = open_coordination(layout)
    assert c.kind == "files" and c.ledger.folder == tmp_path / "ledger" and layout.store == tmp_path / "store"
    assert c.submissions.folder == tmp_path / "store" / "pending"
    monkeypatch.setenv("WEBTOON_STORE_DIR", str(tmp_path / "shared"))
    assert layout.store == tmp_path / "shared"
    monkeypatch.setenv("WEBTOON_DATABASE_URL", "mysql://nope")
    with pytest.raises(ValueError, match="postgresql://"):
        open_coordination(layout)


# -- two machines, one season ---------------------------------------------------------------------------
EPISODES = ["ep01", "ep02", "ep03"]
LOCK_TROUBLE = re.compile(r"(?i)(deadlock|lock\w*\W+(error|timeout|timed out)|lost while held|could not obtain lock|"
                          r"database is locked|LockTimeout|lock_timeout)")


def worker_env(fake, root: DataLayout, home: Path, **extra: str) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # Dagster's own default storage
    env = {k: v for k, v in os.environ.items() if k not in ("WEBTOON_DATABASE_URL", "WEBTOON_STORE_DIR",
                                                          "WEBTOON_INSTANCE_CONFIG", "WEBTOON_MAX_RUN_USD")}
    return {**env, **fake.env(), "WEBTOON_DATA_DIR": str(root.root), "DAGSTER_HOME": str(home),
            "WEBTOON_FAL_POLL_SECONDS": "0.02", "WEBTOON_RETRY_BASE_SECONDS": "0.01",
            "WEBTOON_FAL_REFERENCES": "inline", "DAGSTER_DISABLE_TELEMETRY": "1", **extra}


def start_worker(env: dict[str, str], state: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "webtoon_assets_tests.pg_worker", str(state / f"{name}.ready"),
                             str(state / "go"), *EPISODES], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def set_budget(layout: DataLayout, usd: str) -> None:
    path = layout.series_dir(SAMPLE) / "series.yaml"
    data = yaml.safe_load(path.read_text())
    data["budget"]["per_episode_usd"] = float(usd)
    path.write_text(yaml.safe_dump(data))


SPEND_VIEWS = {  # per episode, asset family and model: what was spent and made (hits differ: see below)
    "episode_spend": "series, provider, episode, spent_usd, quote_usd, counted_usd, generations, refused, failed, "
                     "unknown, megapixels",
    "asset_spend": "series, provider, asset, spent_usd, quote_usd, counted_usd, generations, megapixels",
    "model_spend": "provider, endpoint, spent_usd, quote_usd, counted_usd, generations, images, megapixels, "
                   "usd_per_image",
    "amortization": "*",
    "projection": "*",
    "platform_whatif": "*",
}


def spend_tables(layout: DataLayout) -> dict[str, list[tuple]]:
    return {view: cost_sql(layout, f"SELECT {cols} FROM {view} ORDER BY ALL") for view, cols in SPEND_VIEWS.items()}


def test_two_machines_backfilling_the_same_episodes_pay_each_request_once(postgres, fake_fal, tmp_path):  # noqa: F811
    """Two worker processes (each its own Dagster home, SQLite, and data root: two machines), one
    PostgreSQL, one shared store, start at the same moment and backfill ep01..ep03, which share
    characters. Meanwhile a third process makes the same three episodes alone with the file defaults
    (its own fake fal), for the cost tables to compare with."""
    url = postgres.create_database(f"season_{uuid.uuid4().hex[:12]}")
    budget = "0.60"  # per episode: an episode costs $0.24-0.45 here; two machines must not overshoot it
    roots = [fresh_data_root(tmp_path / f"machine{i}") for i in (1, 2)]
    alone = fresh_data_root(tmp_path / "alone")
    for layout in (*roots, alone):
        set_budget(layout, budget)
    shared_store, state = tmp_path / "shared-store", tmp_path / "state"
    state.mkdir()
    other_fal = start_fake_fal(tmp_path / "fake-fal-alone")
    try:
        workers = [start_worker(worker_env(fake_fal, layout, tmp_path / f"home{i}", WEBTOON_DATABASE_URL=url,
                                           WEBTOON_STORE_DIR=str(shared_store)), state, f"m{i}")
                   for i, layout in enumerate(roots, 1)]
        workers.append(start_worker(worker_env(other_fal, alone, tmp_path / "home-alone"), state, "alone"))
        wait_for(lambda: all((state / f"{n}.ready").exists() or p.poll() is not None
                             for n, p in zip(("m1", "m2", "alone"), workers)), timeout=240, what="workers ready")
        started = time.monotonic()
        (state / "go").touch()
        outputs = []
        for p in workers:
            out, _ = p.communicate(timeout=600)
            outputs.append(out)
            assert p.returncode == 0, out[-6000:]
        wall = time.monotonic() - started
        alone_stats = other_fal.stats()
    finally:
        other_fal.stop()
    done = [json.loads(o.split("WORKER-DONE ", 1)[1].splitlines()[0]) for o in outputs]

    # exactly one payment per distinct request, and nothing else paid
    stats = fake_fal.stats()
    per_body = stats["submissions_by_prompt"]
    submitted = stats["counts"]["submitted"]
    assert per_body and submitted == len(per_body) and max(per_body.values()) == 1, stats["counts"]
    assert stats["paid_by_prompt"] == per_body and stats["counts"]["paid"] == submitted
    c = PgCoordination(url)
    rows = list(c.ledger.rows())
    generated = [r for r in rows if r.status == "generated"]
    assert len(generated) == submitted and len({r.request_key for r in generated}) == submitted
    assert {r.status for r in rows} == {"generated", "cached"}  # no refusal, failure or unknown
    billed = sum((r.billed_usd for r in rows), Decimal(0))
    assert billed == Decimal(stats["billed_usd"])  # the books equal what fal billed
    # the same season made alone paid for the same number of requests
    assert alone_stats["counts"]["paid"] == submitted and Decimal(alone_stats["billed_usd"]) == billed
    # no lock errors or timeouts in either machine's output; nothing left in flight or journalled
    for out in outputs[:2]:
        assert not LOCK_TROUBLE.search(out), LOCK_TROUBLE.search(out).group(0)
    assert c.submissions.pending() == []
    with admin(url) as con, con.cursor() as cur:
        cur.execute("SELECT count(*) FROM webtoon_reservations")
        assert cur.fetchone()[0] == 0
    # the budgets held: every episode within its budget
    per_episode = Counter()
    for r in rows:
        per_episode[r.episode] += r.counted_usd
    assert set(per_episode) == set(EPISODES) and max(per_episode.values()) <= Decimal(budget)
    # both machines did work: each made some requests and took the other's from the store
    runs = [set(d["runs"]) for d in done[:2]]
    made_by = [sum(r.status == "generated" for r in rows if r.run_id in rs) for rs in runs]
    hits_by = [sum(r.status == "cached" for r in rows if r.run_id in rs) for rs in runs]

    # the cost tables from the PostgreSQL ledger equal those of the season made on one machine
    notes: list[str] = []
    assert refresh_cost_tables(roots[0], log=notes.append, database_url=url) is not None, notes
    assert refresh_cost_tables(alone, log=notes.append) is not None, notes
    assert notes == []
    assert spend_tables(roots[0]) == spend_tables(alone)
    assert cost_sql(roots[0], "SELECT count(*) FROM generations") == [(len(rows),)]
    print(f"\ntwo machines: {submitted} submissions, {len(per_body)} distinct bodies, max {max(per_body.values())} "
          f"per body; billed ${billed} (fake fal ${stats['billed_usd']}); made {made_by}, hits {hits_by}; "
          f"per episode {dict(per_episode)}; backfill {[d['seconds'] for d in done]} s, wall {wall:.1f} s")
    c.close()
