"""The money path's coordination in one PostgreSQL database, for several machines (``WEBTOON_DATABASE_URL``).

- **The ledger** is an append-only table, ``webtoon_ledger``: one row per attempt, holding the row's
  JSON line exactly as the file ledger writes it (``line``, with its checksum) beside the columns
  the sums read (money as ``numeric``, never a float). A trigger refuses UPDATE, DELETE and TRUNCATE.
  An append is committed before it returns. Appends take a transaction-scoped advisory lock, so ids
  are given in commit order: a reader that sees row N sees every row before it, and the cost tables'
  export can resume after the last id it wrote.
- **A request key's lock** is a session advisory lock, ``pg_advisory_lock(<first 16 hex digits of
  the key as a signed 64-bit int>)``, held on a connection of its own for as long as the request is
  made: two machines never pay for the same request, waits block (no lock timeout), and a process
  that dies drops its locks with its connection.
- **Budgets**: every check is one transaction serialised by a transaction-scoped advisory lock:
  it drops the reservations whose process's connection is gone (``pg_stat_activity``), sums what the
  ledger counts plus what is in flight, checks, and reserves.
- **The submission journal** is a table, ``webtoon_submissions``: one row per key, written (and
  committed) before a paid request is sent and the moment it is accepted, deleted once the attempt's
  ledger row is written.

The schema is made on first use, idempotently, under an advisory lock (two machines starting at
once do not race). The project's fixed locks use the two-int form under CLASS ("WTON"); request keys
the one-bigint form, a separate lock space.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import psycopg2
import psycopg2.extensions
from filelock import FileLock

from webtoon_assets.files import write_text_atomic
from webtoon_assets.gateway.budget import Budgets
from webtoon_assets.gateway.submissions import Submission
from webtoon_assets.ledger import LedgerProblem, LedgerRow
from webtoon_assets.ledger.row import DamagedRow, parse_line
from webtoon_assets.liveness import HOST

log = logging.getLogger(__name__)

CLASS = 0x57544F4E  # "WTON": the class id of the project's own advisory locks (two-int form)
SCHEMA_LOCK, LEDGER_LOCK, BUDGETS_LOCK = 1, 2, 3
TRIES = 4  # a lost connection is opened again this many times before an operation gives up
EXPORT_SEGMENT_BYTES = 64 << 20  # the cost tables' mirror: a new file past this size (old ones stay unread)

SCHEMA = """
CREATE TABLE IF NOT EXISTS webtoon_meta (key text PRIMARY KEY, value text NOT NULL);
INSERT INTO webtoon_meta VALUES ('identity', %(identity)s) ON CONFLICT (key) DO NOTHING;
CREATE TABLE IF NOT EXISTS webtoon_ledger (
    id bigserial PRIMARY KEY,
    written timestamptz NOT NULL DEFAULT now(),
    row_id text NOT NULL UNIQUE,
    time timestamptz NOT NULL,
    run_id text NOT NULL,
    series text NOT NULL,
    episode text NOT NULL,
    asset text NOT NULL,
    provider text NOT NULL,
    request_key text NOT NULL,
    provider_request_id text,
    status text NOT NULL,
    billed_usd numeric NOT NULL,
    counted_usd numeric NOT NULL,
    list_usd numeric NOT NULL,
    line text NOT NULL);
CREATE INDEX IF NOT EXISTS webtoon_ledger_episode ON webtoon_ledger (series, episode);
CREATE INDEX IF NOT EXISTS webtoon_ledger_run ON webtoon_ledger (run_id);
CREATE INDEX IF NOT EXISTS webtoon_ledger_request_key ON webtoon_ledger (request_key);
CREATE INDEX IF NOT EXISTS webtoon_ledger_provider_request ON webtoon_ledger (provider_request_id)
    WHERE provider_request_id IS NOT NULL;
CREATE OR REPLACE FUNCTION webtoon_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'webtoon_ledger is append-only: %% refused (a correction is a new row)', TG_OP;
END $$;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'webtoon_ledger_no_change') THEN
        CREATE TRIGGER webtoon_ledger_no_change BEFORE UPDATE OR DELETE ON webtoon_ledger
            FOR EACH ROW EXECUTE FUNCTION webtoon_ledger_append_only();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'webtoon_ledger_no_truncate') THEN
        CREATE TRIGGER webtoon_ledger_no_truncate BEFORE TRUNCATE ON webtoon_ledger
            FOR EACH STATEMENT EXECUTE FUNCTION webtoon_ledger_append_only();
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS webtoon_reservations (
    id text PRIMARY KEY,
    episode text NOT NULL,
    run text NOT NULL,
    usd numeric NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    backend_pid integer NOT NULL,
    backend_start timestamptz,
    created timestamptz NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS webtoon_reservations_episode ON webtoon_reservations (episode);
CREATE INDEX IF NOT EXISTS webtoon_reservations_run ON webtoon_reservations (run);
CREATE TABLE IF NOT EXISTS webtoon_submissions (
    key text PRIMARY KEY,
    entry jsonb NOT NULL,
    updated timestamptz NOT NULL DEFAULT now());
"""

_LEDGER_COLUMNS = ("row_id", "time", "run_id", "series", "episode", "asset", "provider", "request_key",
                   "provider_request_id", "status", "billed_usd", "counted_usd", "list_usd", "line")
_INSERT = (f"SELECT pg_advisory_xact_lock({CLASS}, {LEDGER_LOCK}); "
           f"INSERT INTO webtoon_ledger ({', '.join(_LEDGER_COLUMNS)}) "
           f"VALUES ({', '.join(['%s'] * len(_LEDGER_COLUMNS))}) ON CONFLICT (row_id) DO NOTHING")
# A connection lost mid-operation, or a server restarting: the operation is tried again on a new one.
_LOST = (psycopg2.OperationalError, psycopg2.InterfaceError)
T = TypeVar("T")


def request_lock_id(key: str) -> int:
    """A request key's advisory lock: its first 16 hex digits as a signed 64-bit int."""
    try:
        value = int(key[:16], 16) if len(key) >= 16 else None
    except ValueError:
        value = None
    if value is None:  # not a sha256 key: its own sha256
        import hashlib
        value = int(hashlib.sha256(key.encode()).hexdigest()[:16], 16)
    return value - (1 << 64) if value >= 1 << 63 else value


def where(url: str) -> str:
    """The database, for messages: the URL without its password."""
    from urllib.parse import urlsplit, urlunsplit
    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username}@{host}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


class _Connection(psycopg2.extensions.connection):
    """A connection that knows the process that opened it (``owner``): a forked child must not close it."""

    owner: int


class Database:
    """One PostgreSQL database's connections: each opened with the session settings the money path
    needs (no statement, lock or idle timeouts: a lock waits, a held lock stays held), the schema
    made once per process."""

    _schema_done: set[str] = set()
    _schema_lock = threading.Lock()

    def __init__(self, url: str):
        self.url = url
        self.where = where(url)
        self._identity: str | None = None

    def connect(self, autocommit: bool = True) -> psycopg2.extensions.connection:
        con = psycopg2.connect(self.url, connection_factory=_Connection, keepalives=1, keepalives_idle=30,
                               keepalives_interval=10, keepalives_count=3,
                               application_name=f"webtoon-{HOST}-{os.getpid()}"[:63])
        con.owner = os.getpid()
        con.autocommit = True
        with con.cursor() as cur:
            # A session lock is held on an idle connection: nothing may time it out. The server's
            # own keepalives find a dead client (a machine that went away) within about a minute.
            cur.execute("SET statement_timeout = 0; SET lock_timeout = 0; "
                        "SET idle_in_transaction_session_timeout = 0; SET tcp_keepalives_idle = 30; "
                        "SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 3")
            if con.server_version >= 140000:
                cur.execute("SET idle_session_timeout = 0")
        con.autocommit = autocommit
        self.ensure_schema(con)
        return con

    def ensure_schema(self, con: psycopg2.extensions.connection) -> None:
        if self.url in Database._schema_done:
            return
        with Database._schema_lock:
            if self.url in Database._schema_done:
                return
            was = con.autocommit
            con.autocommit = False
            try:
                with con.cursor() as cur:
                    cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (CLASS, SCHEMA_LOCK))
                    cur.execute(SCHEMA, {"identity": uuid.uuid4().hex})
                con.commit()
            except BaseException:
                con.rollback()
                raise
            finally:
                con.autocommit = was
            Database._schema_done.add(self.url)

    def identity(self) -> str:
        """This database's ledger, named once when its schema was made: the cost tables' mirror is per identity."""
        if self._identity is None:
            con = self.connect()
            try:
                with con.cursor() as cur:
                    cur.execute("SELECT value FROM webtoon_meta WHERE key = 'identity'")
                    self._identity = cur.fetchone()[0]
            finally:
                con.close()
        return self._identity


def _forget(con: psycopg2.extensions.connection | None) -> None:
    """Close a connection of this process; a forked child never closes its parent's (that would end
    the parent's session and drop its locks): it is only kept from being collected."""
    if con is None:
        return
    if getattr(con, "owner", os.getpid()) != os.getpid():
        _INHERITED.append(con)
        return
    try:
        con.close()
    except psycopg2.Error:
        pass


_INHERITED: list[Any] = []


class _Session:
    """One connection of this process, used by one thread at a time, opened again when lost."""

    def __init__(self, db: Database, autocommit: bool = True):
        self.db = db
        self.autocommit = autocommit
        self.lock = threading.RLock()
        self._con: psycopg2.extensions.connection | None = None
        self.opened = 0  # connections opened so far (a new one means a new backend)

    def connection(self) -> psycopg2.extensions.connection:
        if self._con is not None and (self._con.owner != os.getpid() or self._con.closed):
            _forget(self._con)
            self._con = None
        if self._con is None:
            self._con = self.db.connect(self.autocommit)
            self.opened += 1
        return self._con

    def run(self, op: Callable[[psycopg2.extensions.connection], T], what: str) -> T:
        """``op`` on the connection; on a lost connection, again on a new one (``op`` must be safe to repeat)."""
        with self.lock:
            for attempt in range(TRIES):
                con = self.connection()
                try:
                    return op(con)
                except _LOST as e:
                    _forget(con)
                    self._con = None
                    if attempt == TRIES - 1:
                        raise
                    log.warning("%s: connection to %s lost (%s); trying again", what, self.db.where, e)
                    time.sleep(0.2 * (attempt + 1))
                except BaseException:
                    if not con.closed and not con.autocommit:
                        con.rollback()
                    raise
            raise AssertionError("unreachable")

    def close(self) -> None:
        with self.lock:
            _forget(self._con)
            self._con = None


# -- the ledger -------------------------------------------------------------------------------------
class PgLedger:
    """The ledger as an append-only table: the file Ledger's interface (append, rows, find, close)."""

    def __init__(self, db: Database):
        self.db = db
        self.folder = None  # no folder: read through rows() and find()
        self.where = f"{db.where} table webtoon_ledger"
        self._session = _Session(db, autocommit=False)

    def append(self, row: LedgerRow) -> None:
        """Committed before it returns. Repeated after a lost connection: a row already committed is
        kept once (its id is unique)."""
        values = (row.id, row.time, row.run_id, row.series, row.episode, row.asset, row.provider, row.request_key,
                  row.provider_request_id, row.status, row.billed_usd, row.counted_usd, row.list_usd, row.to_line())

        def op(con):
            with con.cursor() as cur:
                cur.execute(_INSERT, values)
            con.commit()
        self._session.run(op, "ledger append")

    def rows(self, problems: list[LedgerProblem] | None = None) -> Iterator[LedgerRow]:
        """Every row in id (commit) order, read from its line: a damaged line (which only someone
        bypassing the trigger could make) goes to ``problems``, as the file ledger's readers report it."""
        for rid, line in ledger_lines(self.db):
            try:
                yield parse_line(line)
            except DamagedRow as e:
                if problems is not None:
                    problems.append(LedgerProblem(Path("webtoon_ledger"), rid, str(e)))

    def find(self, needle: str, since: float = 0.0) -> Iterator[LedgerRow]:
        """Rows whose request key or provider request id is ``needle``, in id order. ``since`` is not
        applied (the indexes make the whole ledger cheap to ask, and machines' clocks may differ)."""
        def op(con):
            with con.cursor() as cur:
                cur.execute("SELECT line FROM webtoon_ledger WHERE request_key = %s OR provider_request_id = %s "
                            "ORDER BY id", (needle, needle))
                out = [line for (line,) in cur.fetchall()]
            con.commit()
            return out
        for line in self._session.run(op, "ledger find"):
            try:
                yield parse_line(line)
            except DamagedRow:
                continue

    def close(self) -> None:
        self._session.close()


def ledger_lines(db: Database, after: int = 0) -> Iterator[tuple[int, str]]:
    """(id, line) of the rows after id ``after``, in id (commit) order, streamed through a server-side
    cursor on a connection of its own."""
    con = db.connect(autocommit=False)
    try:
        with con.cursor(name=f"webtoon_ledger_{uuid.uuid4().hex[:8]}") as cur:
            cur.itersize = 10000
            cur.execute("SELECT id, line FROM webtoon_ledger WHERE id > %s ORDER BY id", (after,))
            yield from cur
        con.commit()
    finally:
        con.close()


# -- request locks ------------------------------------------------------------------------------------
class PgLocks:
    """``lock(key)``: a session advisory lock on a connection held for the lock's duration, taken from
    a small pool (one connection per thread holding a lock; idle ones kept for the next)."""

    def __init__(self, db: Database, keep_idle: int = 8):
        self.db = db
        self.keep_idle = keep_idle
        self._idle: list[psycopg2.extensions.connection] = []
        self._guard = threading.Lock()
        self._pid = os.getpid()
        self.lost = 0  # locks whose connection was lost while held (logged): 0 in a healthy run

    def _take(self) -> psycopg2.extensions.connection:
        with self._guard:
            if self._pid != os.getpid():  # a forked child: the parent's connections are not ours
                for con in self._idle:
                    _INHERITED.append(con)
                self._idle, self._pid = [], os.getpid()
            while self._idle:
                con = self._idle.pop()
                if not con.closed:
                    return con
        return self.db.connect()

    def _give_back(self, con: psycopg2.extensions.connection) -> None:
        with self._guard:
            if self._pid == os.getpid() and len(self._idle) < self.keep_idle and not con.closed:
                self._idle.append(con)
                return
        _forget(con)

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        lock_id = request_lock_id(key)
        for attempt in range(TRIES):
            con = None
            try:
                con = self._take()
                with con.cursor() as cur:
                    cur.execute("SELECT pg_advisory_lock(%s)", (lock_id,))  # waits as long as it takes
                break
            except _LOST as e:
                _forget(con)
                if attempt == TRIES - 1:
                    raise
                log.warning("request lock %s: connection to %s lost (%s); trying again", key[:12], self.db.where, e)
                time.sleep(0.2 * (attempt + 1))
            except BaseException:
                _forget(con)  # interrupted while waiting: the session (and any lock it got) ends with it
                raise
        assert con is not None
        try:
            yield
        finally:
            try:
                with con.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock(%s)", (lock_id,))
                    held = cur.fetchone()[0]
                if not held:
                    raise psycopg2.InterfaceError("the lock was not held")
                self._give_back(con)
            except psycopg2.Error as e:
                self.lost += 1
                log.warning("request lock %s: lost while held (%s): another process may have taken it meanwhile",
                            key[:12], e)
                _forget(con)

    def close(self) -> None:
        with self._guard:
            idle, self._idle = self._idle, []
        for con in idle:
            _forget(con)


# -- budgets -----------------------------------------------------------------------------------------
class PgBudgets(Budgets):
    """Budgets (gateway/budget.py) whose shared place is the database: the same calls, messages and
    sums. What is spent is summed from webtoon_ledger (``counted_usd`` by episode and by run); what
    is in flight from the open reservations, each tied to the connection of the process that made
    it (its backend's pid and start time): when that connection is gone, so is the reservation."""

    def __init__(self, db: Database, run_id: str = "", per_episode: dict[tuple[str, str], Decimal] | None = None,
                 per_run_usd: Decimal | None = None):
        super().__init__(None, None, run_id, per_episode, per_run_usd)  # type: ignore[arg-type]
        self.db = db
        self._session = _Session(db, autocommit=False)
        self._opened = 0
        self._backend: tuple[int, Any] | None = None
        # this process's open reservations: put back if its connection was lost and opened again
        self._held: dict[str, tuple[str, str, Decimal]] = {}
        self._pid = os.getpid()

    def _live(self) -> psycopg2.extensions.connection:
        if self._pid != os.getpid():  # a forked child holds none of its parent's reservations
            self._held.clear()
            self._pid = os.getpid()
        con = self._session.connection()
        if self._session.opened != self._opened:
            with con.cursor() as cur:
                cur.execute("SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()")
                self._backend = cur.fetchone()
                if self._held:  # a lost connection took its reservations with it: hold them again
                    for rid, (episode, run, usd) in self._held.items():
                        cur.execute("INSERT INTO webtoon_reservations (id, episode, run, usd, host, pid, backend_pid, "
                                    "backend_start) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                                    "ON CONFLICT (id) DO UPDATE SET backend_pid = EXCLUDED.backend_pid, "
                                    "backend_start = EXCLUDED.backend_start",
                                    (rid, episode, run, usd, HOST, os.getpid(), *self._backend))
            con.commit()
            self._opened = self._session.opened
        return con

    def _locked(self, body: Callable[[Any], T], what: str) -> T:
        """``body(cursor)`` in one transaction holding the budgets' lock, after dropping dead holds."""
        def op(_con):
            con = self._live()
            with con.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (CLASS, BUDGETS_LOCK))
                cur.execute("DELETE FROM webtoon_reservations r WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a "
                            "WHERE a.pid = r.backend_pid AND (a.backend_start IS NULL "
                            "OR a.backend_start = r.backend_start))")
                out = body(cur)
            con.commit()
            return out
        return self._session.run(op, what)

    @staticmethod
    def _one(cur, sql: str, *args: Any) -> Decimal:
        cur.execute(sql, args)
        return Decimal(cur.fetchone()[0])

    def _pg_state(self, cur, series: str, episode: str) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        ep = f"episode:{series}/{episode}"
        run = f"run:{self.run_id}"
        return (self._one(cur, "SELECT coalesce(sum(counted_usd), 0) FROM webtoon_ledger WHERE series = %s "
                               "AND episode = %s", series, episode),
                self._one(cur, "SELECT coalesce(sum(usd), 0) FROM webtoon_reservations WHERE episode = %s", ep),
                self._one(cur, "SELECT coalesce(sum(counted_usd), 0) FROM webtoon_ledger WHERE run_id = %s",
                          self.run_id),
                self._one(cur, "SELECT coalesce(sum(usd), 0) FROM webtoon_reservations WHERE run = %s", run))

    def reserve(self, series: str, episode: str, usd: Decimal, what: str) -> str | None:
        if not self.limited(series, episode):
            return None
        rid = uuid.uuid4().hex
        scope = (f"episode:{series}/{episode}", f"run:{self.run_id}", usd)

        def body(cur):
            self._check(series, episode, usd, what, self._pg_state(cur, series, episode))
            cur.execute("INSERT INTO webtoon_reservations (id, episode, run, usd, host, pid, backend_pid, backend_start) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                        (rid, *scope, HOST, os.getpid(), *self._backend))
        with self._lock:
            self._locked(body, "budget reservation")
            self._held[rid] = scope
        return rid

    def release(self, reservation: str | None) -> None:
        if reservation is None:
            return

        def op(_con):
            con = self._live()
            with con.cursor() as cur:
                cur.execute("DELETE FROM webtoon_reservations WHERE id = %s", (reservation,))
            con.commit()
        with self._lock:
            self._held.pop(reservation, None)
            self._session.run(op, "budget release")

    def check_quote(self, series: str, episode: str, usd: Decimal, what: str, items: Iterable[str] = ()) -> None:
        if not self.limited(series, episode):
            return
        listed = list(items)
        detail = f"; the most expensive: {', '.join(listed)}" if listed else ""
        with self._lock:
            self._locked(lambda cur: self._check(series, episode, usd, what,
                                                      self._pg_state(cur, series, episode), detail), "budget check")

    def episode_totals(self, series: str, episode: str) -> tuple[Decimal, Decimal]:
        def op(con):
            with con.cursor() as cur:
                cur.execute("SELECT coalesce(sum(billed_usd), 0), coalesce(sum(list_usd) FILTER "
                            "(WHERE status = 'generated'), 0) FROM webtoon_ledger WHERE series = %s AND episode = %s",
                            (series, episode))
                spent, made = cur.fetchone()
            con.commit()
            return Decimal(spent), Decimal(made)
        with self._lock:
            return self._session.run(op, "episode totals")

    def close(self) -> None:
        with self._lock:
            self._session.close()  # this process's reservations end with its connection
            self._held.clear()


# -- the submission journal -------------------------------------------------------------------------
class _RowJournal:
    """One key's journal entry as a row (Submission's backend): each write committed before it returns."""

    def __init__(self, owner: "PgSubmissions", key: str):
        self.owner, self.key = owner, key

    def write(self, entry: dict[str, Any]) -> None:
        text = json.dumps(entry)

        def op(con):
            with con.cursor() as cur:
                cur.execute("INSERT INTO webtoon_submissions (key, entry, updated) VALUES (%s, %s::jsonb, now()) "
                            "ON CONFLICT (key) DO UPDATE SET entry = EXCLUDED.entry, updated = now()", (self.key, text))
        self.owner._session.run(op, "journal write")

    def remove(self) -> None:
        def op(con):
            with con.cursor() as cur:
                cur.execute("DELETE FROM webtoon_submissions WHERE key = %s", (self.key,))
        self.owner._session.run(op, "journal retire")


class PgSubmissions:
    """The journal of paid submissions as a table (gateway/submissions.py has its rules)."""

    def __init__(self, db: Database):
        self.db = db
        self._session = _Session(db, autocommit=True)

    def open(self, key: str) -> Submission:
        def op(con):
            with con.cursor() as cur:
                cur.execute("SELECT entry FROM webtoon_submissions WHERE key = %s", (key,))
                found = cur.fetchone()
            return found[0] if found else None
        entry = self._session.run(op, "journal read")
        if entry is not None and not isinstance(entry, dict):  # not an entry: an intent of unknown outcome
            entry = {"damaged": True, "started_at": 0.0}
        return Submission(None, entry, journal=_RowJournal(self, key))

    def pending(self) -> list[str]:
        """The keys with an entry (requests in flight, or left by a process that died)."""
        def op(con):
            with con.cursor() as cur:
                cur.execute("SELECT key FROM webtoon_submissions ORDER BY key")
                return [k for (k,) in cur.fetchall()]
        return self._session.run(op, "journal list")

    def close(self) -> None:
        self._session.close()


# -- the cost tables' mirror --------------------------------------------------------------------------
def export_ledger(db: Database, mirror_root: Path) -> Path:
    """Append the ledger rows not yet exported to this database's mirror folder under ``mirror_root``
    (``<identity>/<first id>.jsonl``, each line exactly the row's ``line``) and return the folder:
    the cost tables read it as they read the file ledger. A file is closed past EXPORT_SEGMENT_BYTES,
    so a refresh re-reads only the newest. The state (last id, file, bytes) is written atomically
    after each fsynced append: a crash mid-export is cut back to the last state on the next export.
    Callers serialise exports of one folder (the cost tables hold their lock)."""
    folder = mirror_root / db.identity()
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / ".export.json"
    with FileLock(folder / ".export.lock"):
        try:
            state = json.loads(state_path.read_text())
            last_id, segment, size = int(state["last_id"]), str(state["segment"]), int(state["bytes"])
        except (OSError, ValueError, KeyError, TypeError):
            last_id, segment, size = 0, "", 0
        # Back to the last whole state: files after it go, its own file is cut to its size.
        for path in sorted(folder.glob("*.jsonl")):
            if not segment or path.name > segment:
                path.unlink()
            elif path.name == segment and path.stat().st_size != size:
                with open(path, "rb+") as f:
                    f.truncate(size)
                    os.fsync(f.fileno())
        if segment and not (folder / segment).exists():
            if size:  # the state names bytes that are gone: export again from the start
                for path in folder.glob("*.jsonl"):
                    path.unlink()
                last_id, segment, size = 0, "", 0

        def save() -> None:
            write_text_atomic(state_path, json.dumps({"last_id": last_id, "segment": segment, "bytes": size}),
                              durable=True)

        out = None
        try:
            pending = 0
            for rid, line in ledger_lines(db, last_id):
                if out is not None and size >= EXPORT_SEGMENT_BYTES:  # full: whole and recorded first
                    out.flush()
                    os.fsync(out.fileno())
                    out.close()
                    out = None
                    save()
                if out is None:
                    if not segment or size >= EXPORT_SEGMENT_BYTES:
                        segment, size = f"{rid:015d}.jsonl", 0
                    out = open(folder / segment, "ab")
                data = line.encode("utf-8")
                out.write(data)
                size += len(data)
                last_id = rid
                pending += 1
                if pending >= 10000:
                    out.flush()
                    os.fsync(out.fileno())
                    save()
                    pending = 0
        finally:
            if out is not None:
                out.flush()
                os.fsync(out.fileno())
                out.close()
                save()
    return folder


# -- the whole -----------------------------------------------------------------------------------------
class PgCoordination:
    """The money path's coordination in one database (gateway/coordination/__init__.py)."""

    kind = "postgres"

    def __init__(self, url: str):
        self.db = Database(url)
        self.where = f"{self.db.where} (table webtoon_ledger)"
        self.ledger = PgLedger(self.db)
        self.submissions = PgSubmissions(self.db)
        self.locks = PgLocks(self.db)

    def lock(self, key: str):
        return self.locks.lock(key)

    def budgets(self, run_id: str = "", per_run_usd: Decimal | None = None,
                per_episode: dict[tuple[str, str], Decimal] | None = None) -> PgBudgets:
        return PgBudgets(self.db, run_id, per_episode=per_episode, per_run_usd=per_run_usd)

    def export_ledger(self, mirror_root: Path) -> Path:
        return export_ledger(self.db, mirror_root)

    def close(self) -> None:
        self.ledger.close()
        self.submissions.close()
        self.locks.close()
