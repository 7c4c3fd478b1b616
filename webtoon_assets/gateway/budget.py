"""Budgets, shared by every process: a quote is reserved before any paid submission, against what
the ledger says is spent plus what every process has in flight.

The shared, locked place is one SQLite file (``<data>/budgets.sqlite``): ``BEGIN IMMEDIATE``
serialises reservations across processes, so no number of processes can together exceed a
budget. It holds the open reservations (with the host and pid that made them: a dead process's
are dropped) and a running sum of the ledger (what each episode and each run has spent), caught
up incrementally from the ledger files' byte offsets, so a check never re-reads the whole ledger.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Iterable

from webtoon_assets.ledger import LedgerProblem, ledger_files, read_file
from webtoon_assets.liveness import HOST, writer_alive

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ledger_files (name TEXT PRIMARY KEY, offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS spent (scope TEXT PRIMARY KEY, usd TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reservations (id TEXT PRIMARY KEY, episode TEXT NOT NULL, run TEXT NOT NULL,
    usd TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, created REAL NOT NULL);
"""


# The running sums kept: a new kind of sum recounts the ledger once (offsets and sums are reset).
SUMS_VERSION = "2"


class BudgetExceeded(RuntimeError):
    pass


def _episode_scope(series: str, episode: str) -> str:
    return f"episode:{series}/{episode}"


class Budgets:
    """``per_episode``: limits from series.yaml; ``per_run_usd``: WEBTOON_MAX_RUN_USD, for the
    whole run ``run_id`` across all its step processes (the gateway sets it to its own)."""

    def __init__(self, db_path: Path, ledger_dir: Path, run_id: str = "",
                 per_episode: dict[tuple[str, str], Decimal] | None = None, per_run_usd: Decimal | None = None):
        self.db_path = db_path
        self.ledger_dir = ledger_dir
        self.run_id = run_id
        self.per_episode = dict(per_episode or {})
        self.per_run_usd = per_run_usd
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = None
        self._pid: int | None = None

    def set_episode_budget(self, series: str, episode: str, usd: Decimal | None) -> None:
        with self._lock:
            if usd is None:
                self.per_episode.pop((series, episode), None)
            else:
                self.per_episode[(series, episode)] = usd

    def limited(self, series: str, episode: str) -> bool:
        return (series, episode) in self.per_episode or self.per_run_usd is not None

    # -- the shared state --------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._con is None or self._pid != os.getpid():
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.db_path, timeout=120, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            # The ledger is the durable truth (fsynced rows); these sums and holds are caught up from
            # it, so a commit here need not wait for the disk: WAL keeps each one atomic.
            con.execute("PRAGMA synchronous=NORMAL")
            con.executescript(SCHEMA)
            con.execute("BEGIN IMMEDIATE")
            version = con.execute("SELECT value FROM meta WHERE key = 'sums'").fetchone()
            if version is None or version[0] != SUMS_VERSION:
                con.execute("DELETE FROM ledger_files")
                con.execute("DELETE FROM spent")
                con.execute("INSERT OR REPLACE INTO meta VALUES ('sums', ?)", (SUMS_VERSION,))
            con.execute("COMMIT")
            self._con, self._pid = con, os.getpid()
        return self._con

    def _transaction(self):
        con = self._connect()
        con.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes
        return con

    def _catch_up(self, con: sqlite3.Connection) -> None:
        """Add the ledger rows written since the last look to the running sums."""
        offsets = dict(con.execute("SELECT name, offset FROM ledger_files"))
        added: dict[str, Decimal] = {}
        for path in ledger_files(self.ledger_dir):
            start = offsets.get(path.name, 0)
            try:
                if path.stat().st_size <= start:
                    continue
            except FileNotFoundError:
                continue
            end = start
            problems: list[LedgerProblem] = []
            for row, end in read_file(path, problems, start=start):
                for scope in (_episode_scope(row.series, row.episode), f"run:{row.run_id}"):
                    added[scope] = added.get(scope, Decimal(0)) + row.counted_usd
                # what the episode has really been billed, and what it has made at list price
                spent, made = f"spent:{row.series}/{row.episode}", f"quote:{row.series}/{row.episode}"
                added[spent] = added.get(spent, Decimal(0)) + row.billed_usd
                if row.status == "generated":
                    added[made] = added.get(made, Decimal(0)) + row.list_usd
            for p in problems:  # not counted, never silently: `webtoon ledger verify` lists them too
                log.warning("budgets: damaged ledger row, not counted: %s", p)
            if end != start:
                con.execute("INSERT INTO ledger_files VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET offset = ?",
                            (path.name, end, end))
        for scope, usd in added.items():
            old = con.execute("SELECT usd FROM spent WHERE scope = ?", (scope,)).fetchone()
            con.execute("INSERT OR REPLACE INTO spent VALUES (?, ?)", (scope, str(Decimal(old[0] if old else 0) + usd)))

    def _drop_dead(self, con: sqlite3.Connection) -> None:
        for rid, host, pid in con.execute("SELECT id, host, pid FROM reservations").fetchall():
            if not writer_alive(host, pid):
                con.execute("DELETE FROM reservations WHERE id = ?", (rid,))

    @staticmethod
    def _sum(con: sqlite3.Connection, sql: str, *args: str) -> Decimal:
        return sum((Decimal(v) for (v,) in con.execute(sql, args)), Decimal(0))

    def _state(self, con: sqlite3.Connection, series: str, episode: str) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        """(episode spent, episode in flight, run spent, run in flight), caught up."""
        self._catch_up(con)
        self._drop_dead(con)
        ep = _episode_scope(series, episode)
        run = f"run:{self.run_id}"
        return (self._sum(con, "SELECT usd FROM spent WHERE scope = ?", ep),
                self._sum(con, "SELECT usd FROM reservations WHERE episode = ?", ep),
                self._sum(con, "SELECT usd FROM spent WHERE scope = ?", run),
                self._sum(con, "SELECT usd FROM reservations WHERE run = ?", run))

    def _check(self, series: str, episode: str, usd: Decimal, what: str,
               state: tuple[Decimal, Decimal, Decimal, Decimal], detail: str = "") -> None:
        spent, inflight, run_spent, run_inflight = state
        limit = self.per_episode.get((series, episode))
        if limit is not None and spent + inflight + usd > limit:
            raise BudgetExceeded(
                f"budget refused {what}: episode {series}/{episode} budget ${limit} (series.yaml "
                f"budget.per_episode_usd); spent ${spent}, in flight ${inflight} (every process), "
                f"left ${max(Decimal(0), limit - spent - inflight)}, this needs ${usd}{detail}")
        if self.per_run_usd is not None and run_spent + run_inflight + usd > self.per_run_usd:
            raise BudgetExceeded(
                f"budget refused {what}: run cap ${self.per_run_usd} (WEBTOON_MAX_RUN_USD); spent ${run_spent}, "
                f"in flight ${run_inflight} (every step of the run), this needs ${usd}{detail}")

    # -- the gateway's calls ------------------------------------------------------------------------
    def reserve(self, series: str, episode: str, usd: Decimal, what: str) -> str | None:
        """Hold ``usd`` for one attempt, or raise BudgetExceeded. Returns the reservation's id."""
        if not self.limited(series, episode):
            return None
        with self._lock:
            con = self._transaction()
            try:
                self._check(series, episode, usd, what, self._state(con, series, episode))
                rid = uuid.uuid4().hex
                con.execute("INSERT INTO reservations VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (rid, _episode_scope(series, episode), f"run:{self.run_id}", str(usd), HOST,
                             os.getpid(), time.time()))
                con.execute("COMMIT")
                return rid
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def release(self, reservation: str | None) -> None:
        """The attempt ended and its ledger row is written: what it cost is in the ledger now."""
        if reservation is None:
            return
        with self._lock:
            self._connect().execute("DELETE FROM reservations WHERE id = ?", (reservation,))

    def check_quote(self, series: str, episode: str, usd: Decimal, what: str, items: Iterable[str] = ()) -> None:
        """Refuse a whole plan (a pre-flight quote) that does not fit what is left."""
        if not self.limited(series, episode):
            return
        with self._lock:
            con = self._transaction()
            try:
                listed = list(items)
                detail = f"; the most expensive: {', '.join(listed)}" if listed else ""
                self._check(series, episode, usd, what, self._state(con, series, episode), detail)
            finally:
                con.execute("COMMIT")

    def episode_totals(self, series: str, episode: str) -> tuple[Decimal, Decimal]:
        """(spent, quote) for the episode to date, over every run: billed, and the list price of
        what was made. Re-runs add nothing to either, so plotted per partition they stay true."""
        with self._lock:
            con = self._transaction()
            try:
                self._catch_up(con)
                spent = self._sum(con, "SELECT usd FROM spent WHERE scope = ?", f"spent:{series}/{episode}")
                made = self._sum(con, "SELECT usd FROM spent WHERE scope = ?", f"quote:{series}/{episode}")
            finally:
                con.execute("COMMIT")
        return spent, made

    def close(self) -> None:
        with self._lock:
            if self._con is not None and self._pid == os.getpid():
                self._con.close()
            self._con = None
