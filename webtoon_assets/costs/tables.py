"""Build data/webtoon.duckdb from the ledger (the truth) and the bible.

The file is never written while someone may be reading it: a refresh writes a temporary file and
renames it over the old one. A reader holding the old file open (the DuckDB CLI, read-only) keeps
its snapshot and never blocks a run; two runs refreshing at once take turns on a lock.

The ledger is read by DuckDB itself, as lines: one pass checks every line (its checksum, sha256 in
SQL, and that it is a whole row as ``LedgerRow.to_line`` writes it) and parses it into typed columns
(money DECIMAL, never a float). Lines of a file in which SQL finds anything it does not vouch for (a
damaged row, a row of the old format, a byte the CSV reader would not keep as it is) are read again
by the ledger's own reader (``read_file``): its rows replace what SQL made of them, and its problems
are reported by file and line exactly as ``webtoon ledger verify`` reports them. A partial last line
(a torn write) is never counted, and is reported once its writer is gone.

A refresh is incremental. The file records what it holds of each ledger file (``_ledger_ingested``:
its inode, size and ctime when read, the whole lines read (``bytes``, ``lines``), the sha256 of
those bytes, and its rows; each row of ``generations`` names its ``ledger_file``). A refresh starts
from a copy of the previous file when that file is as the last refresh left it (the stamp beside it:
inode, size, mtime; no write-ahead log) and of this format (``_cost_tables_meta``), and per ledger
file:

- unchanged (inode, size, ctime): nothing is read; its rows and problems stay;
- the same inode, no shorter, and the bytes read before unchanged (their sha256, streamed): only the
  lines after them are read (a partial last line is left, as ever);
- anything else (rewritten, truncated, replaced): its rows and problems go, and it is read whole;
- gone: its rows and problems go.

The small tables (bible, what-if, trials, problems) and the views are made again each time. Anything
unexpected about the previous file means a whole build, as does ``full=True`` or
``WEBTOON_COST_TABLES_FULL=1`` (``webtoon ledger verify`` stays the full audit of the ledger).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, get_args

import duckdb
from filelock import FileLock

from webtoon_assets.bible import BibleError, ProseScript, episode_ids, load_episode, load_series, series_ids
from webtoon_assets.costs.whatif import Usage, platform_whatif
from webtoon_assets.files import atomic_path, write_text_atomic
from webtoon_assets.ledger import LedgerProblem, LedgerRow, Status, journal, ledger_files, read_file
from webtoon_assets.ledger import row as ledger_row
from webtoon_assets.ledger.journal import _last_newline, _writer_gone
from webtoon_assets.ledger.reconcile import read_differences
from webtoon_assets.paths import DataLayout
from webtoon_assets.pricing import PriceBook, load_pricebook

SQL_VIEWS = Path(__file__).with_name("views.sql")
MONEY = "DECIMAL(18,8)"
# DuckDB's share of a refresh: bounded, whatever the ledger's size (it spills to a folder beside the
# file being built). With the interpreter and the libraries the whole process stays under ~1 GB.
MEMORY_LIMIT = "400MB"
THREADS = max(1, min(os.cpu_count() or 1, 4))
TORN = "torn write: the process died mid-append (the next writer seals it)"
FULL_ENV = "WEBTOON_COST_TABLES_FULL"  # set (not 0): every refresh builds the file whole
# What the file holds and how a row is read from the ledger. Bump FORMAT for a change the sources
# hashed below would not show; any change to them (or to DuckDB) makes the next refresh a whole build.
FORMAT = 1
# A file changed this recently may change again within its ctime's granularity without its stat
# showing it: its ctime is not trusted (the next refresh checks its bytes), and it is read from a copy.
RACY_NS = 2_000_000_000
CHUNK = 1 << 20
BOM = b"\xef\xbb\xbf"  # the CSV reader drops it at the start of a file; read_file keeps it (and rejects the line)

# -- a ledger line as SQL reads it ------------------------------------------------------------------
# LedgerRow.to_line writes model_dump_json(exclude_none=True) (the model's fields, absent when None)
# and then `,"sum":"<16 hex>"}`. SQL vouches for a line that ends so, whose checksum holds, that
# parses, whose keys are all fields with a value (none extra, repeated or null) and whose values are
# of the types the table holds. Anything else (a row of the old format without a checksum, a
# hand-edited one, a damaged one) is left to read_file.
# (field, DuckDB type as from_json reads it, always written): LedgerRow's fields in their order
_FIELDS = [("id", "VARCHAR", True), ("time", "VARCHAR", True), ("run_id", "VARCHAR", True),
           ("series", "VARCHAR", True), ("episode", "VARCHAR", True), ("asset", "VARCHAR", True),
           ("item", "VARCHAR", True), ("reusable", "BOOLEAN", True), ("provider", "VARCHAR", True),
           ("endpoint", "VARCHAR", True), ("request_key", "VARCHAR", True), ("status", "VARCHAR", True),
           ("billed_usd", "VARCHAR", True), ("list_usd", "VARCHAR", True), ("credits", "VARCHAR", True),
           ("units", "VARCHAR", False), ("unit", "VARCHAR", False), ("megapixels", "VARCHAR", False),
           ("images", "BIGINT", False), ("seconds", "VARCHAR", False), ("width", "BIGINT", False),
           ("height", "BIGINT", False), ("inputs", "JSON", True), ("provider_request_id", "VARCHAR", False),
           ("billable_units", "VARCHAR", False), ("settles", "VARCHAR", False), ("error", "VARCHAR", False),
           ("note", "VARCHAR", False)]
if [f for f, _, _ in _FIELDS] != list(LedgerRow.model_fields):  # a new ledger field must be added here
    raise RuntimeError("costs/tables.py: _FIELDS is out of step with LedgerRow")
# How many keys a line holds when every one is a field with a value (no extra, repeated or null key):
# the fields present, and "sum". Their order does not matter (nor does it to LedgerRow).
_KEY_COUNT = "1 + " + " + ".join(f"(j.{f} IS NOT NULL)::INTEGER" for f, _, _ in _FIELDS)
_STRUCT = json.dumps({name: kind for name, kind, _ in _FIELDS}, separators=(",", ":"))
_STATUSES = ", ".join(f"'{s}'" for s in get_args(Status))
_INPUTS = r"\[(\[-?[0-9]{1,9},-?[0-9]{1,9}\](,\[-?[0-9]{1,9},-?[0-9]{1,9}\])*)?\]"  # [[w,h], ...]


def _lines(paths: list[Path]) -> str:
    """The files as lines, as they are: no quoting, no header, a delimiter no JSON line holds
    unescaped. Lines end at \\n alone: a \\r anywhere fails the read (strict_mode), and the file
    goes to read_file, which sees the \\r as part of its line. Rejected lines (bad UTF-8, the
    delimiter) are stored in reject_errors, and their files go to read_file too."""
    return (f"read_csv({_sql_list(str(p) for p in paths)}, columns={{'line': 'VARCHAR'}}, header=false, "
            "delim=chr(1), quote='', escape='', new_line='\\n', auto_detect=false, strict_mode=true, "
            "store_rejects=true)")


# No query here takes parameters: the DuckDB client imports pandas for the first one (1.5 s).
def _sql_literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"  # money too: its exact string, cast by the column


def _sql_list(values) -> str:
    return "[" + ", ".join(_sql_literal(v) for v in values) + "]"


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[tuple], types: list[str]) -> None:
    """Rows into a table, each value cast from what Python holds (money as its exact string)."""
    for start in range(0, len(rows), 1000):
        values = ", ".join("(" + ", ".join(f"CAST({_sql_literal(v)} AS {t})" for v, t in zip(r, types)) + ")"
                           for r in rows[start:start + 1000])
        con.execute(f"INSERT INTO {table} VALUES {values}")


def _generations_select(source: str, fast: bool) -> str:
    """The generations table's columns (names and types as views.sql and the readers know them)
    from ``source``, a relation of (_piece, ledger_file, line): the columns, ``ledger_file`` (the
    name of the row's ledger file), then the hidden _piece and _ok.

    ``fast``: lines straight from the ledger: TRY_CAST, and _ok says whether SQL vouches for the
    line. Otherwise the lines are rows read_file accepted, written again by ``to_line``: CAST, so a
    value the table cannot hold fails the refresh loudly, as it always has."""
    cast = "TRY_CAST" if fast else "CAST"
    money = f"{cast}(j.list_usd AS {MONEY})"
    cols = f"""
      j.id AS id, {cast}(j.time AS TIMESTAMPTZ) AS time, j.run_id AS run_id, j.series AS series,
      j.episode AS episode, j.asset AS asset, j.item AS item, j.reusable AS reusable, j.provider AS provider,
      j.endpoint AS endpoint, j.request_key AS request_key, j.status AS status,
      {cast}(j.billed_usd AS {MONEY}) AS spent_usd,
      CAST(CASE WHEN j.status = 'generated' THEN {money} ELSE 0 END AS {MONEY}) AS quote_usd,
      CAST(CASE WHEN j.status = 'cached' THEN {money} ELSE 0 END AS {MONEY}) AS saved_usd,
      CAST(CASE WHEN j.provider = 'local' THEN CASE WHEN j.status = 'generated' THEN {money} ELSE 0 END
                ELSE {cast}(j.billed_usd AS {MONEY}) END AS {MONEY}) AS counted_usd,
      {money} AS list_usd, {cast}(j.credits AS DECIMAL(18,6)) AS credits,
      {cast}(j.units AS DECIMAL(18,6)) AS units, j.unit AS unit,
      {cast}(j.megapixels AS DECIMAL(18,6)) AS megapixels, {cast}(j.images AS INTEGER) AS images,
      {cast}(j.seconds AS DECIMAL(18,3)) AS seconds, {cast}(j.width AS INTEGER) AS width,
      {cast}(j.height AS INTEGER) AS height,
      CAST(coalesce(json_array_length(j.inputs), 0) AS INTEGER) AS n_inputs,
      CAST(coalesce(replace(j.inputs, ',', ', '), '[]') AS JSON) AS inputs,
      j.provider_request_id AS provider_request_id, j.settles AS settles, j.error AS error, j.note AS note"""
    if not fast:
        return f"""SELECT {cols}, ledger_file, _piece, true AS _ok
            FROM (SELECT _piece, ledger_file, from_json(line, '{_STRUCT}') AS j FROM {source})"""
    checks = [
        # the checksum of the line without its sum field (its first len - 26 characters, then "}")
        "suffix(line, ',\"sum\":\"' || left(sha256(substring(line, 1, length(line) - 26) || '}'), 16) || '\"}')",
        f"len(TRY(json_keys(line))) = {_KEY_COUNT}",  # it parses, and every key is a field with a value
        f"status IN ({_STATUSES})", f"regexp_full_match(CAST(j.inputs AS VARCHAR), '{_INPUTS}')",
        # every value the table holds is one it can hold
        "time IS NOT NULL", "spent_usd IS NOT NULL", "list_usd IS NOT NULL", "credits IS NOT NULL",
        *[f"(j.{f} IS NULL) = ({f} IS NULL)" for f in ("units", "megapixels", "seconds", "images", "width", "height")],
        f"(j.billable_units IS NULL OR TRY_CAST(j.billable_units AS DECIMAL(38,10)) IS NOT NULL)"]
    return f"""SELECT * EXCLUDE (j, line), coalesce({' AND '.join(checks)}, false) AS _ok
        FROM (SELECT {cols}, j, line, ledger_file, _piece
              FROM (SELECT _piece, ledger_file, line, TRY(from_json(line, '{_STRUCT}')) AS j FROM {source}))"""


# -- what the file holds of the ledger ----------------------------------------------------------------
_STATE_TABLES = """
    CREATE TABLE _cost_tables_meta (key VARCHAR, value VARCHAR);
    CREATE TABLE _ledger_ingested (file VARCHAR, inode BIGINT, size BIGINT, ctime_ns BIGINT, bytes BIGINT,
      lines BIGINT, prefix_sha256 VARCHAR, rows BIGINT);
    CREATE TABLE _ledger_damaged (file VARCHAR, line INTEGER, reason VARCHAR);
    CREATE TABLE _ledger_places (file VARCHAR, id VARCHAR, place BIGINT);
    CREATE TABLE _whatif_keys (series VARCHAR, provider VARCHAR, request_key VARCHAR, width INTEGER, height INTEGER,
      images INTEGER, inputs VARCHAR, reusable BOOLEAN);
"""
# _ledger_ingested: per ledger file (by name), its stat when read (ctime_ns -1: too recent to trust),
#   the whole lines read (bytes [0, bytes), `lines` of them, their sha256) and the rows they gave.
# _ledger_damaged: the rows read_file rejected, by file and line (torn tails are found afresh each time).
# _ledger_places: where in its file each row read_file supplied ends (the what-if's "last row" order).
# _whatif_keys: per request key made in the season, the usage that counts (kept up to date key by key).
_RECORD_TYPES = ["VARCHAR", "BIGINT", "BIGINT", "BIGINT", "BIGINT", "BIGINT", "VARCHAR", "BIGINT"]


def _format() -> str:
    """This build's format: FORMAT, DuckDB's version and the sources that decide what a row is."""
    h = hashlib.sha256(f"{FORMAT}:{duckdb.__version__}:{MONEY}".encode())
    for module in (__file__, ledger_row.__file__, journal.__file__):
        h.update(Path(module).read_bytes())
    return h.hexdigest()[:32]


@dataclass
class _Record:
    """A ledger file as the cost file holds it (a row of _ledger_ingested)."""

    file: str
    inode: int
    size: int
    ctime_ns: int
    bytes: int
    lines: int
    sha: str
    rows: int

    def astuple(self) -> tuple:
        return (self.file, self.inode, self.size, self.ctime_ns, self.bytes, self.lines, self.sha, self.rows)


@dataclass
class _Piece:
    """Whole lines of one ledger file to read: its bytes [start, end), read by SQL in place (start
    0, a file quiet since before the refresh) or from a copy of exactly those bytes in the scratch
    folder (``source``)."""

    index: int
    path: Path
    stat: os.stat_result  # when the refresh looked at it
    ctime_ns: int  # its ctime then, or -1 if it was too recent to trust
    start: int
    end: int
    lines_before: int  # lines in [0, start)
    rows_before: int  # rows in [0, start)
    hasher: "hashlib._Hash"  # sha256 of [0, start); of [0, end) once read
    source: Path | None = None  # None: the ledger file itself
    lines: int | None = None  # lines in [start, end), once read
    suspect: bool = False  # read_file takes it (a byte-order mark the CSV reader would drop)
    rows: int = 0

    @property
    def reads(self) -> Path:
        return self.path if self.source is None else self.source

    def record(self) -> _Record:
        st = self.stat
        return _Record(self.path.name, st.st_ino, st.st_size, self.ctime_ns, self.end, self.lines_before + self.lines,
                       self.hasher.hexdigest(), self.rows_before + self.rows)


class LedgerChanged(RuntimeError):
    """A ledger file was rewritten while the refresh read it (appending is fine; this is not)."""


def _ctime(st: os.stat_result) -> int:
    """The ctime of a file just looked at, or -1 if it is too recent to trust."""
    return -1 if st.st_ctime_ns > time.time_ns() - RACY_NS else st.st_ctime_ns


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_size, a.st_ctime_ns) == (b.st_ino, b.st_size, b.st_ctime_ns)


def _read_range(f, start: int, end: int, hasher, out=None) -> int:
    """Bytes [start, end) of the open file ``f`` into ``hasher`` (and ``out``): how many lines they
    hold. They must be whole lines: the file must still hold them, the last ending in a newline."""
    f.seek(start)
    pos, lines, last = start, 0, b"\n"
    while pos < end:
        chunk = f.read(min(CHUNK, end - pos))
        if not chunk:
            raise LedgerChanged(f"{f.name}: shorter than when the refresh began")
        hasher.update(chunk)
        lines += chunk.count(b"\n")
        if out is not None:
            out.write(chunk)
        pos += len(chunk)
        last = chunk[-1:]
    if last != b"\n":
        raise LedgerChanged(f"{f.name}: byte {end - 1} is no longer the end of a line")
    return lines


class _Plan:
    """What a refresh reads: the files kept as the cost file holds them, the pieces to read, and the
    files whose rows go (changed, or gone)."""

    def __init__(self, folder: Path, old: dict[str, _Record], scratch: Path):
        self.folder, self.scratch = folder, scratch
        self.kept: dict[str, _Record] = {}
        self.pieces: list[_Piece] = []
        self.dropped: set[str] = set()
        seen: set[str] = set()
        for path in ledger_files(folder):
            try:
                f = open(path, "rb")
            except FileNotFoundError:
                continue
            seen.add(path.name)
            with f:
                self._file(path, f, old.get(path.name))
        self.dropped |= set(old) - seen

    def _file(self, path: Path, f, old: _Record | None) -> None:
        st = os.fstat(f.fileno())
        if old is not None and old.ctime_ns >= 0 and (st.st_ino, st.st_size, st.st_ctime_ns) == (
                old.inode, old.size, old.ctime_ns):
            self.kept[path.name] = old  # unchanged: nothing read
            return
        start, hasher, lines, rows = 0, hashlib.sha256(), 0, 0
        if old is not None and old.inode == st.st_ino and st.st_size >= old.bytes:
            h = hashlib.sha256()
            try:
                same = _read_range(f, 0, old.bytes, h) == old.lines and h.hexdigest() == old.sha
            except LedgerChanged:
                same = False
            if same:  # grown (or only its torn tail changed): the lines after what was read
                start, hasher, lines, rows = old.bytes, h, old.lines, old.rows
        if old is not None and start == 0:
            self.dropped.add(path.name)
        self.add(path, f, st, start, hasher, lines, rows, in_place=True)

    def add(self, path: Path, f, st: os.stat_result, start: int, hasher, lines: int, rows: int,
            in_place: bool) -> _Piece | None:
        """The piece after ``start`` (whole lines up to the file's size at ``st``), or only a
        record if there is none."""
        end, ctime = _last_newline(f, st.st_size), _ctime(st)
        if end <= start:
            self.kept[path.name] = _Record(path.name, st.st_ino, st.st_size, ctime, start, lines, hasher.hexdigest(),
                                           rows)
            return None
        piece = _Piece(len(self.pieces), path, st, ctime, start, end, lines, rows, hasher)
        f.seek(start)
        piece.suspect = f.read(min(3, end - start)) == BOM
        if not (in_place and start == 0 and end == st.st_size and ctime >= 0 and not piece.suspect):
            piece.source = self.scratch / f"piece-{piece.index}" / path.name  # named as its file (tests spy on it)
            piece.source.parent.mkdir()
            with open(piece.source, "wb") as out:
                piece.lines = _read_range(f, start, end, hasher, out)
        self.pieces.append(piece)
        return piece

    def again(self, piece: _Piece) -> _Piece | None:
        """A piece read in place whose file changed meanwhile (a writer appended), read again from a copy."""
        try:
            f = open(piece.path, "rb")
        except FileNotFoundError:  # gone: it will be dropped next time
            return None
        with f:
            return self.add(piece.path, f, os.fstat(f.fileno()), 0, hashlib.sha256(), 0, 0, in_place=False)


def _hash_in_place(pieces: list[_Piece], errors: list[BaseException]) -> None:
    """The sha256 and lines of the pieces SQL reads in place (in a thread, beside SQL). A file that
    changes meanwhile is left without them (and read again)."""
    try:
        for p in pieces:
            try:
                with open(p.path, "rb") as f:
                    p.lines = _read_range(f, 0, p.end, p.hasher)
            except (LedgerChanged, OSError):
                p.lines = None
    except BaseException as e:  # noqa: BLE001 - handed to the refresh
        errors.append(e)


def _rejected(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Files with lines the CSV reader rejected (bad UTF-8, the delimiter): they go to read_file."""
    try:
        return {p for (p,) in con.execute("SELECT DISTINCT file_path FROM reject_scans JOIN reject_errors "
                                          "USING (scan_id, file_id)").fetchall()}
    except duckdb.CatalogException:  # nothing was read as lines
        return set()


def _load(con: duckdb.DuckDBPyConnection, pieces: list[_Piece], create: bool) -> set[int]:
    """The pieces' lines into the table _new (created, or added to), as SQL reads them; the pieces
    SQL could not read at all (left out, for read_file)."""
    unreadable: set[int] = set()

    def run(chosen: list[_Piece]) -> None:
        # file_index counts the files given from 0
        source = (f"(SELECT {_sql_list(p.index for p in chosen)}[CAST(file_index AS BIGINT) + 1] AS _piece, "
                  f"{_sql_list(p.path.name for p in chosen)}[CAST(file_index AS BIGINT) + 1] AS ledger_file, "
                  f"line FROM {_lines([p.reads for p in chosen])})")
        if not chosen:  # no rows: the same table, empty
            source = "(SELECT 0 AS _piece, '' AS ledger_file, '' AS line WHERE false)"
        select = _generations_select(source, fast=True)
        if create:
            con.execute(f"CREATE TABLE _new AS {select}")
        elif chosen:
            con.execute(f"INSERT INTO _new {select}")

    readable = [p for p in pieces if not p.suspect]
    try:
        run(readable)
    except duckdb.Error:  # a file the CSV reader cannot take at all (a stray carriage return): find it
        for p in readable:
            try:
                con.execute(f"SELECT count(*) FROM {_lines([p.reads])}").fetchall()
            except duckdb.Error:
                unreadable.add(p.index)
        run([p for p in readable if p.index not in unreadable])  # fails the refresh if that was not it
    return unreadable


@dataclass
class _Ingested:
    records: dict[str, _Record]  # every ledger file on disk, as the file now holds it
    dropped: set[str]  # files whose earlier rows went
    problems: list[tuple[str, int, str]]  # (file name, line, reason): damaged rows found now
    places: dict[tuple[str, str], int]  # (file name, id) -> where its line ends, for rows read_file supplied


def _ingest(con: duckdb.DuckDBPyConnection, folder: Path, old: dict[str, _Record], scratch: Path,
            create: bool) -> _Ingested:
    """Read what the ledger has that the file does not into the table _new (made if ``create``,
    else only if there is something to read), with the hidden _piece and _ok."""
    plan = _Plan(folder, old, scratch)
    pieces = plan.pieces
    if not pieces and not create:
        return _Ingested(plan.kept, plan.dropped, [], {})
    in_place = [p for p in pieces if p.source is None]
    errors: list[BaseException] = []
    hashing = threading.Thread(target=_hash_in_place, args=(in_place, errors), daemon=True)
    hashing.start()
    try:
        unreadable = _load(con, pieces, create=True)
    finally:
        hashing.join()
    if errors:
        raise errors[0]
    # Read in place and hashed beside SQL: the bytes both read are the same if the file's stat is
    # unchanged since before either (its ctime too old to hide a change). A file that changed is read
    # again, from a copy.
    changed = []
    for p in in_place:
        try:
            if p.lines is None or not _same(os.stat(p.path), p.stat):
                changed.append(p)
        except FileNotFoundError:
            changed.append(p)
    if changed:
        con.execute(f"DELETE FROM _new WHERE _piece IN ({', '.join(str(p.index) for p in changed)})")
        again = [q for p in changed if (q := plan.again(p)) is not None]
        unreadable |= _load(con, again, create=False)
        gone = {p.index for p in changed}
        pieces = [p for p in plan.pieces if p.index not in gone]

    counts = {piece: (n, bad) for piece, n, bad in con.execute(
        "SELECT _piece, count(*), count(*) FILTER (WHERE NOT _ok) FROM _new GROUP BY _piece").fetchall()}
    rejected = _rejected(con)
    fallback = [p for p in pieces if p.suspect or p.index in unreadable or str(p.reads) in rejected
                or counts.get(p.index, (0, 0)) != (p.lines, 0)]  # every line a row SQL vouches for, or read_file
    for p in pieces:
        p.rows = counts.get(p.index, (0, 0))[0]
    if fallback:
        con.execute(f"DELETE FROM _new WHERE _piece IN ({', '.join(str(p.index) for p in fallback)})")

    problems: list[tuple[str, int, str]] = []
    places: dict[tuple[str, str], int] = {}
    for p in fallback:  # the ledger's own reader: every row and every problem, by line
        found: list[LedgerProblem] = []
        again = scratch / f"rows-{p.index}.jsonl"
        p.rows = 0
        last_line = p.lines_before + p.lines
        with open(again, "w", encoding="utf-8") as out:
            for row, offset in read_file(p.reads, found):  # a copy holds [start, end); the file may have grown
                if p.source is None and offset > p.end:
                    break
                out.write(row.to_line())
                places[(p.path.name, row.id)] = p.start + offset
                p.rows += 1
        for problem in found:  # (a piece read in place starts at 0: its lines are the file's)
            line = problem.line + p.lines_before
            if line <= last_line and problem.reason != TORN:  # a torn tail is found afresh each time
                problems.append((p.path.name, line, problem.reason))
        if p.rows:
            source = (f"(SELECT {p.index} AS _piece, {_sql_literal(p.path.name)} AS ledger_file, line "
                      f"FROM {_lines([again])})")
            con.execute(f"INSERT INTO _new {_generations_select(source, fast=False)}")
        again.unlink()
    records = dict(plan.kept)
    for p in pieces:
        records[p.path.name] = p.record()
    return _Ingested(dict(sorted(records.items())), plan.dropped, problems, places)


def _bible(layout: DataLayout, log: Callable[[str], None]) -> tuple[list[tuple], list[tuple]]:
    series_rows, episode_rows = [], []
    for sid in series_ids(layout):
        try:
            series = load_series(layout, sid)
        except BibleError as e:
            log(f"cost tables: skipping series {sid}: {e}")
            continue
        series_rows.append((sid, series.title, series.planned_episodes, str(series.budget.target_per_panel_usd),
                            None if series.budget.per_episode_usd is None else str(series.budget.per_episode_usd)))
        for eid in episode_ids(layout, sid):
            try:
                ep = load_episode(layout, series, eid)
            except BibleError as e:
                log(f"cost tables: skipping episode {sid}/{eid}: {e}")
                continue
            if isinstance(ep, ProseScript):  # its panels are known once the storyboard has made them
                board = layout.output_dir(sid, eid) / "storyboard.json"
                panels = len(json.loads(board.read_text())["panels"]) if board.is_file() else 0
            else:
                panels = len(ep.panels)
            episode_rows.append((sid, eid, ep.title, panels))
    return series_rows, episode_rows


def _ledger_order(folder: Path, rows: list[tuple[str, str, int | None]]) -> dict[tuple[str, str], tuple[str, int]]:
    """(file, id) -> its place in the ledger as read_rows meets it: the file, then where its line
    ends in the file. Rows read_file supplied have their place (_ledger_places); the others are
    found by their id in their file."""
    out, wanted = {}, {}
    for file, rid, place in rows:
        if place is not None:
            out[(file, rid)] = (file, place)
        else:
            wanted.setdefault(file, set()).add(rid)
    for file, ids in wanted.items():
        with open(folder / file, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            for rid in ids:  # a line SQL vouched for begins with its id, as to_line writes it
                at = m.find(b'{"id":' + json.dumps(rid, ensure_ascii=False).encode())
                out[(file, rid)] = (file, m.find(b"\n", at) + 1)
    return out


# The season's usage: generated rows of an episode (the model trial, episode '', is not the season's usage).
_SEASON_MADE = "episode <> '' AND status = 'generated' AND width <> 0 AND height <> 0"
_USAGE = ["width", "height", "images", "inputs", "reusable"]  # what a generation's price depends on


def _whatif_keys(con: duckdb.DuckDBPyConnection, folder: Path, only_affected: bool) -> None:
    """_whatif_keys: per series, provider and request key made in the season, the usage that counts:
    its rows' if they are alike, else its last row's as read_rows meets them. For every key, or only
    for those in _affected (whose rows changed: the table holds none of them now)."""
    scope = ""
    if only_affected:
        if not con.execute("SELECT count(*) FROM _affected").fetchone()[0]:
            return
        scope = "SEMI JOIN _affected USING (series, provider, request_key)"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _per_key AS
        SELECT series, provider, request_key,
               min(width) IS DISTINCT FROM max(width) OR min(height) IS DISTINCT FROM max(height)
               OR min(images) IS DISTINCT FROM max(images) OR count(images) NOT IN (0, count(*))
               OR min(inputs) IS DISTINCT FROM max(inputs) OR bool_and(reusable) <> bool_or(reusable) AS mixed,
               min(width) AS width, min(height) AS height, min(images) AS images, min(inputs) AS inputs,
               bool_and(reusable) AS reusable
        FROM (SELECT series, provider, request_key, width, height, images, CAST(inputs AS VARCHAR) AS inputs, reusable
              FROM generations {scope} WHERE {_SEASON_MADE})
        GROUP BY series, provider, request_key""")
    con.execute("INSERT INTO _whatif_keys SELECT * EXCLUDE (mixed) FROM _per_key WHERE NOT mixed")
    rows = con.execute(f"""
        SELECT series, provider, request_key, ledger_file, id, {{{', '.join(f"'{c}': {c}" for c in _USAGE)}}}, p.place
        FROM (SELECT series, provider, request_key, ledger_file, id, width, height, images,
                     CAST(inputs AS VARCHAR) AS inputs, reusable
              FROM generations SEMI JOIN (SELECT * FROM _per_key WHERE mixed) USING (series, provider, request_key)
              WHERE {_SEASON_MADE}) m
        LEFT JOIN (SELECT file AS ledger_file, id, max(place) AS place FROM _ledger_places GROUP BY ALL) p
        USING (ledger_file, id)""").fetchall()
    con.execute("DROP TABLE _per_key")
    if not rows:
        return
    # Of a key made more than once, not alike each time, the last row counts, as read_rows meets them.
    order = _ledger_order(folder, [(file, rid, place) for *_, file, rid, _, place in rows])
    last: dict[tuple, tuple] = {}
    for series, provider, key, file, rid, r, _ in rows:
        if (series, provider, key) not in last or order[(file, rid)] >= last[(series, provider, key)][0]:
            last[(series, provider, key)] = (order[(file, rid)], r)
    _insert(con, "_whatif_keys", [(*k, *(r[c] for c in _USAGE)) for k, (_, r) in last.items()],
            ["VARCHAR"] * 3 + ["INTEGER", "INTEGER", "INTEGER", "VARCHAR", "BOOLEAN"])


def _whatif(con: duckdb.DuckDBPyConnection, book: PriceBook, episodes: list[tuple]) -> list[tuple]:
    """The season's usage re-priced on every image model: per series and provider, its distinct
    generated requests (_whatif_keys), grouped in DuckDB by what the price depends on; each group is
    quoted once."""
    panels = {(s, e): int(p) for s, e, _, p in episodes}
    produced: dict[tuple[str, str], list[str]] = {
        (s, p): eps for s, p, eps in con.execute("""
            SELECT series, provider, list(DISTINCT episode) FROM generations
            WHERE episode <> '' AND status IN ('generated', 'cached') GROUP BY ALL""").fetchall()}
    usage: dict[tuple[str, str], list[Usage]] = {}
    for series, provider, width, height, images, inputs, reusable, n in sorted(con.execute(
            f"SELECT series, provider, {', '.join(_USAGE)}, count(*) FROM _whatif_keys GROUP BY ALL").fetchall(),
            key=lambda g: tuple((v is None, v) for v in g)):
        usage.setdefault((series, provider), []).append(
            Usage(width, height, images, tuple(tuple(p) for p in json.loads(inputs)), reusable, n))
    out = []
    quotes: dict = {}  # the same request on the same endpoint is quoted once, whatever its series
    for (series, provider), used in usage.items():
        eps = produced.get((series, provider), [])
        n_panels = sum(panels.get((series, e), 0) for e in eps)
        for packing in ("none", "board"):  # as made, and with every panel's references packed into one image
            for m in platform_whatif(book, used, quotes, packing):
                out.append((series, provider, len(eps), n_panels, m["platform"], m["model"], m["endpoints"],
                            m["max_references"], str(m["season_usd"]), str(m["one_time_usd"]), m["references_dropped"],
                            packing))
    return out


class _Side(threading.Thread):
    """What the bible, the trials and the price book say: read in a thread while the ledger is."""

    def __init__(self, layout: DataLayout):
        super().__init__(daemon=True)
        self.layout = layout
        self.notes: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.series_rows, self.episode_rows = _bible(self.layout, self.notes.append)
            self.trials, self.recs = _trials(self.layout)
            self.book = load_pricebook(self.layout.pricebook)
            # `webtoon reconcile`'s differences: a small file, read whole each time (not the ledger's)
            self.reconciliation, problems = read_differences(self.layout.reconciliation_path)
            self.notes += [f"cost tables: {p}" for p in problems]
        except BaseException as e:  # noqa: BLE001 - raised by the refresh
            self.error = e


def _trials(layout: DataLayout) -> tuple[list[tuple], list[tuple]]:
    trials, recs = [], []
    for sid in series_ids(layout):
        folder = layout.output_dir(sid) / "trials"
        for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            data = json.loads(p.read_text())
            if p.name == "recommendation.json":
                recs.append({"series": sid, **data})
            else:
                trials.append(data)
    legacy = {"trial_spent_usd": "trial_billed_usd", "trial_quote_usd": "trial_list_usd"}  # trials made before
    return ([tuple(t.get(c, t.get(legacy.get(c, c))) for c in TRIAL_COLUMNS) for t in trials],
            [tuple(r.get(c) for c in ("series", "action", "endpoint", "model", "reason", "platform")) for r in recs])


TRIAL_COLUMNS = ["series", "model", "platform", "endpoint", "cost_per_panel_usd", "consistency", "verdict", "scorer",
                 "variations", "character", "trial_spent_usd", "trial_quote_usd", "provider",
                 # under the consistency gate (series.yaml consistency): the share of takes under its threshold,
                 # and the takes and dollars per accepted panel (NULL: none accepted, or a trial made before)
                 "retake_rate", "takes_per_accepted_panel", "cost_per_accepted_panel_usd",
                 # every reference counted, packed each way (models.panels.pack_references); and the consistency
                 # of variations made with the base packed as the series packs it (NULL: it does not)
                 "cost_per_panel_lineup_usd", "cost_per_panel_board_usd", "packing", "consistency_packed",
                 # a LoRA candidate (models.loras.endpoint): its training, amortised per panel, in cost_per_panel_usd
                 "lora", "lora_training_per_panel_usd"]
_SMALL_TABLES = f"""
    CREATE TABLE ledger_problems (file VARCHAR, line INTEGER, reason VARCHAR);
    CREATE TABLE series_info (series VARCHAR, title VARCHAR, planned_episodes INTEGER,
      target_per_panel_usd {MONEY}, per_episode_budget_usd {MONEY});
    CREATE TABLE episodes (series VARCHAR, episode VARCHAR, title VARCHAR, panels INTEGER);
    CREATE TABLE _whatif_raw (series VARCHAR, provider VARCHAR, episodes INTEGER, panels INTEGER, platform VARCHAR,
      model VARCHAR, endpoints VARCHAR, max_references INTEGER, season_usd {MONEY}, one_time_usd {MONEY},
      references_dropped INTEGER, packing VARCHAR);
    CREATE TABLE _trials (series VARCHAR, model VARCHAR, platform VARCHAR, endpoint VARCHAR,
      cost_per_panel_usd DECIMAL(18,6), consistency DOUBLE, verdict VARCHAR, scorer VARCHAR, variations INTEGER,
      character VARCHAR, trial_spent_usd {MONEY}, trial_quote_usd {MONEY}, provider VARCHAR, retake_rate DOUBLE,
      takes_per_accepted_panel DOUBLE, cost_per_accepted_panel_usd DECIMAL(18,6),
      cost_per_panel_lineup_usd DECIMAL(18,6), cost_per_panel_board_usd DECIMAL(18,6), packing VARCHAR,
      consistency_packed DOUBLE, lora BOOLEAN, lora_training_per_panel_usd DECIMAL(18,6));
    CREATE TABLE model_recommendation (series VARCHAR, action VARCHAR, endpoint VARCHAR, model VARCHAR,
      reason VARCHAR, platform VARCHAR);
    CREATE TABLE reconciliation (run_id VARCHAR, checked_at TIMESTAMPTZ, source VARCHAR, endpoint VARCHAR,
      bucket TIMESTAMPTZ, timeframe VARCHAR, row_id VARCHAR, ledger_usd {MONEY}, platform_usd {MONEY},
      difference_usd {MONEY}, drift BOOLEAN, tolerance_usd {MONEY}, ledger_units DECIMAL(18,6),
      platform_units DECIMAL(18,6), unit VARCHAR, note VARCHAR);
"""
_RECONCILIATION_TYPES = ["VARCHAR", "TIMESTAMPTZ", "VARCHAR", "VARCHAR", "TIMESTAMPTZ", "VARCHAR", "VARCHAR", MONEY,
                         MONEY, MONEY, "BOOLEAN", MONEY, "DECIMAL(18,6)", "DECIMAL(18,6)", "VARCHAR", "VARCHAR"]


_SMALL_TABLE_NAMES = ["ledger_problems", "series_info", "episodes", "_whatif_raw", "_trials", "model_recommendation",
                      "reconciliation"]


def _old_state(con: duckdb.DuckDBPyConnection, layout: DataLayout) -> dict[str, _Record] | None:
    """What an earlier file holds of the ledger, if it is of this format and over this ledger."""
    try:
        meta = dict(con.execute("SELECT key, value FROM _cost_tables_meta").fetchall())
        if meta.get("format") != _format() or meta.get("ledger") != str(layout.ledger_dir):
            return None
        records = {r[0]: _Record(*r) for r in con.execute(
            "SELECT file, inode, size, ctime_ns, bytes, lines, prefix_sha256, rows FROM _ledger_ingested").fetchall()}
        (rows,), = con.execute("SELECT count(*) FROM generations").fetchall()
    except (duckdb.Error, TypeError, ValueError):
        return None
    if rows != sum(r.rows for r in records.values()):
        return None
    return records


def _sql_in(values) -> str:
    return "(" + ", ".join(_sql_literal(v) for v in values) + ")"


def _build(con: duckdb.DuckDBPyConnection, layout: DataLayout, log: Callable[[str], None],
           old: dict[str, _Record] | None, scratch: Path) -> None:
    """The tables and views, into a new file (``old`` None) or over an earlier one holding ``old``."""
    folder = layout.ledger_dir
    side = _Side(layout)  # the bible, the trials and the price book, read meanwhile
    side.start()
    if old is None:
        con.execute(_STATE_TABLES)
    try:
        got = _ingest(con, folder, old or {}, scratch, create=old is None)
    finally:
        side.join()
    if side.error is not None:
        raise side.error
    if old is None:  # the rows read are the table
        con.execute("ALTER TABLE _new DROP COLUMN _piece; ALTER TABLE _new DROP COLUMN _ok; "
                    "ALTER TABLE _new RENAME TO generations")
    else:  # the request keys whose rows change: their usage is found again below
        con.execute("CREATE TEMP TABLE _affected (series VARCHAR, provider VARCHAR, request_key VARCHAR)")
        keys = f"SELECT DISTINCT series, provider, request_key FROM {{}} WHERE {_SEASON_MADE}"
        if got.dropped:
            files = _sql_in(sorted(got.dropped))
            con.execute(f"INSERT INTO _affected {keys.format('generations')} AND ledger_file IN {files}; "
                        f"DELETE FROM generations WHERE ledger_file IN {files}; "
                        f"DELETE FROM _ledger_damaged WHERE file IN {files}; "
                        f"DELETE FROM _ledger_places WHERE file IN {files}")
        if con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = '_new' "
                       "AND database_name = current_database()").fetchone()[0]:
            con.execute(f"INSERT INTO _affected {keys.format('_new')}; "
                        "INSERT INTO generations SELECT * EXCLUDE (_piece, _ok) FROM _new; DROP TABLE _new")
        con.execute("DELETE FROM _whatif_keys k USING _affected a WHERE k.series = a.series "
                    "AND k.provider = a.provider AND k.request_key = a.request_key")
    _insert(con, "_ledger_damaged", got.problems, ["VARCHAR", "INTEGER", "VARCHAR"])
    _insert(con, "_ledger_places", [(f, i, p) for (f, i), p in got.places.items()], ["VARCHAR", "VARCHAR", "BIGINT"])
    _whatif_keys(con, folder, only_affected=old is not None)
    con.execute("DELETE FROM _ledger_ingested")
    _insert(con, "_ledger_ingested", [r.astuple() for r in got.records.values()], _RECORD_TYPES)
    con.execute("DELETE FROM _cost_tables_meta")
    _insert(con, "_cost_tables_meta", [("format", _format()), ("ledger", str(folder))], ["VARCHAR", "VARCHAR"])
    # Every file's rows are those recorded for it, or the refresh fails (and the next one builds whole).
    held = dict(con.execute("SELECT ledger_file, count(*) FROM generations GROUP BY ALL").fetchall())
    if held != {r.file: r.rows for r in got.records.values() if r.rows}:
        raise RuntimeError("the rows of the cost tables are not those recorded per ledger file")

    # The problems: damaged rows as recorded, and partial last lines whose writer is gone (found each time).
    problems = [(str(folder / f), line, reason) for f, line, reason in
                con.execute("SELECT file, line, reason FROM _ledger_damaged").fetchall()]
    problems += [(str(folder / r.file), r.lines + 1, TORN) for r in got.records.values()
                 if r.size > r.bytes and _writer_gone(folder / r.file)]
    problems.sort(key=lambda p: (p[0], p[1]))  # as read_rows meets them: by file, then line
    for file, line, reason in problems:  # counted out of every sum, but never silently
        log(f"cost tables: damaged ledger row, not counted: {file}:{line}: {reason} (see `webtoon ledger verify`)")

    for (view,) in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal "
                               "AND database_name = current_database()").fetchall():
        con.execute(f'DROP VIEW "{view}"')
    for table in _SMALL_TABLE_NAMES:
        con.execute(f"DROP TABLE IF EXISTS {table}")
    con.execute(_SMALL_TABLES)
    _insert(con, "ledger_problems", problems, ["VARCHAR", "INTEGER", "VARCHAR"])
    for note in side.notes:
        log(note)
    _insert(con, "series_info", side.series_rows, ["VARCHAR", "VARCHAR", "INTEGER", MONEY, MONEY])
    _insert(con, "episodes", side.episode_rows, ["VARCHAR", "VARCHAR", "VARCHAR", "INTEGER"])
    _insert(con, "_whatif_raw", _whatif(con, side.book, side.episode_rows),
            ["VARCHAR", "VARCHAR", "INTEGER", "INTEGER", "VARCHAR", "VARCHAR", "VARCHAR", "INTEGER", MONEY, MONEY,
             "INTEGER", "VARCHAR"])
    _insert(con, "_trials", side.trials, ["VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "DECIMAL(18,6)", "DOUBLE",
                                          "VARCHAR", "VARCHAR", "INTEGER", "VARCHAR", MONEY, MONEY, "VARCHAR",
                                          "DOUBLE", "DOUBLE", "DECIMAL(18,6)", "DECIMAL(18,6)", "DECIMAL(18,6)",
                                          "VARCHAR", "DOUBLE", "BOOLEAN", "DECIMAL(18,6)"])
    _insert(con, "model_recommendation", side.recs, ["VARCHAR"] * 6)
    _insert(con, "reconciliation", side.reconciliation, _RECONCILIATION_TYPES)
    con.execute(SQL_VIEWS.read_text())


def write_cost_tables(path: Path, layout: DataLayout, log: Callable[[str], None] = print, reuse: bool = False) -> None:
    """Write the cost tables and views into the DuckDB file at ``path``: a new file; or, with
    ``reuse``, a copy of an earlier one, brought up to date (built whole if it is not of this
    format or cannot be read)."""
    scratch = Path(f"{path}.d")  # DuckDB's spill, the pieces' copies and read_file's rows; removed after
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        con = duckdb.connect(str(path))
        old = None
        if reuse:
            old = _old_state(con, layout)
            if old is None:  # not one to build on: a new file
                con.close()
                path.unlink()
                Path(f"{path}.wal").unlink(missing_ok=True)
                con = duckdb.connect(str(path))
        try:
            con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'; SET threads = {THREADS}; "
                        f"SET temp_directory = {_sql_literal(str(scratch))}")
            _build(con, layout, log, old, scratch)
        finally:
            con.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _stamp(target: Path) -> Path:
    """Beside the cost file: its inode, size and mtime as the last refresh left it."""
    return target.with_name(f".{target.name}.stamp")


def _as_left(target: Path) -> bool:
    """Whether the cost file is as the last refresh left it (no one wrote it since)."""
    try:
        stamp = json.loads(_stamp(target).read_text())
        st = target.stat()
    except (OSError, ValueError):
        return False
    return (not Path(f"{target}.wal").exists()
            and stamp == {"inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns})


@dataclass(frozen=True)
class _MirroredLedger(DataLayout):
    """A data root whose ledger, for the build, is the database ledger's mirror folder."""

    mirror: Path = Path()

    @property
    def ledger_dir(self) -> Path:
        return self.mirror


def _ledger_source(layout: DataLayout, database_url: str | None) -> DataLayout:
    """``layout`` as given (the ledger's files), or, with a database configured (``database_url``, else
    WEBTOON_DATABASE_URL), with the rows not yet exported appended to its mirror under
    ``<data>/ledger_pg/<database identity>/`` (JSON lines as the file ledger writes them) as the
    ledger folder: the build reads it as it reads the files. Budgets never read the mirror."""
    from webtoon_assets.gateway.coordination import configured_url

    url = configured_url(database_url)
    if url is None:
        return layout
    from webtoon_assets.gateway.coordination.postgres import Database, export_ledger

    return _MirroredLedger(layout.root, export_ledger(Database(url), layout.root / "ledger_pg"))


def refresh_cost_tables(layout: DataLayout, log: Callable[[str], None] = print, full: bool | None = None,
                        database_url: str | None = None) -> Path | None:
    """Bring the DuckDB file up to date (incrementally; whole with ``full`` or WEBTOON_COST_TABLES_FULL).
    Never raises: the ledger stays the truth, and a failed refresh is logged and repaired by the next one.
    With a database ledger (``database_url`` or WEBTOON_DATABASE_URL), its new rows are exported first."""
    target = layout.duckdb_path
    if full is None:
        full = os.environ.get(FULL_ENV, "") not in ("", "0")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(target.with_name(f".{target.name}.lock")):
            layout = _ledger_source(layout, database_url)  # under the lock: no build reads a half-written line
            with atomic_path(target) as tmp:  # named by host and pid, so a killed refresh's file is swept
                notes: list[str] = []
                try:
                    if not full and _as_left(target):
                        try:  # a copy of it, brought up to date; it stays as it is for its readers
                            shutil.copyfile(target, tmp)
                            if not _as_left(target):
                                raise LedgerChanged(f"{target} changed while copied")
                            write_cost_tables(tmp, layout, notes.append, reuse=True)
                        except Exception as e:  # noqa: BLE001 - whatever it was, a whole build says it again
                            notes[:] = [f"cost tables: built whole ({type(e).__name__} bringing them up to date: {e})"]
                            full = True
                    else:
                        full = True
                    if full:
                        tmp.unlink(missing_ok=True)
                        Path(f"{tmp}.wal").unlink(missing_ok=True)
                        write_cost_tables(tmp, layout, notes.append)
                    st = tmp.stat()
                finally:
                    Path(f"{tmp}.wal").unlink(missing_ok=True)
                    for note in notes:
                        log(note)
            # A WAL beside the target belongs to the file just replaced (a read-write session a
            # user left open or killed): replayed onto the rebuilt file it would bring back stale
            # tables, or corrupt it. Users' own tables belong in their own database (README).
            Path(f"{target}.wal").unlink(missing_ok=True)
            write_text_atomic(_stamp(target), json.dumps({"inode": st.st_ino, "size": st.st_size,
                                                          "mtime_ns": st.st_mtime_ns}))
        return target
    except Exception as e:  # noqa: BLE001 - a cost-table refresh must never fail a generation step
        log(f"cost tables not refreshed ({type(e).__name__}: {e}); the ledger has every row")
        return None
