"""Build data/webtoon.duckdb from the ledger (the truth) and the bible.

The file is rebuilt whole into a temporary file and renamed over the old one. A reader holding
the old file open (the DuckDB CLI, read-only) keeps its snapshot and never blocks a run; two runs
refreshing at once take turns on a lock; neither ever writes the file someone is reading.

The ledger is read by DuckDB itself, each file as lines: one pass checks every line (its checksum,
sha256 in SQL, and that it is a whole row as ``LedgerRow.to_line`` writes it) and parses it into
typed columns (money DECIMAL, never a float). A file in which SQL finds anything it does not vouch
for (a damaged row, a row of the old format, a byte the CSV reader would not keep as it is) is read
again by the ledger's own reader (``read_file``): its rows replace what SQL made of the file, and
its problems are reported by file and line exactly as ``webtoon ledger verify`` reports them. A
partial last line (a torn write) is never counted, and is reported once its writer is gone.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, get_args

import duckdb
from filelock import FileLock

from webtoon_assets.bible import BibleError, ProseScript, episode_ids, load_episode, load_series, series_ids
from webtoon_assets.costs.whatif import Usage, platform_whatif
from webtoon_assets.files import atomic_path
from webtoon_assets.ledger import LedgerProblem, LedgerRow, Status, ledger_files, read_file
from webtoon_assets.ledger.journal import _last_newline, _writer_gone
from webtoon_assets.paths import DataLayout
from webtoon_assets.pricing import load_pricebook

SQL_VIEWS = Path(__file__).with_name("views.sql")
MONEY = "DECIMAL(18,8)"
# DuckDB's share of a refresh: bounded, whatever the ledger's size (it spills to a folder beside the
# file being built). With the interpreter and the libraries the whole process stays under ~1 GB.
MEMORY_LIMIT = "400MB"
THREADS = max(1, min(os.cpu_count() or 1, 4))
TORN = "torn write: the process died mid-append (the next writer seals it)"

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


def _generations_select(source: str, fast: bool, tails: bool = False) -> str:
    """The generations table's columns (names and types as views.sql and the readers know them)
    from ``source``, a relation of (_file, line); then the hidden _file, _ok and _tail.

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
        return f"""SELECT {cols}, _file, true AS _ok, false AS _tail
            FROM (SELECT _file, from_json(line, '{_STRUCT}') AS j FROM {source})"""
    checks = [
        # the checksum of the line without its sum field (its first len - 26 characters, then "}")
        "suffix(line, ',\"sum\":\"' || left(sha256(substring(line, 1, length(line) - 26) || '}'), 16) || '\"}')",
        f"len(TRY(json_keys(line))) = {_KEY_COUNT}",  # it parses, and every key is a field with a value
        f"status IN ({_STATUSES})", f"regexp_full_match(CAST(j.inputs AS VARCHAR), '{_INPUTS}')",
        # every value the table holds is one it can hold
        "time IS NOT NULL", "spent_usd IS NOT NULL", "list_usd IS NOT NULL", "credits IS NOT NULL",
        *[f"(j.{f} IS NULL) = ({f} IS NULL)" for f in ("units", "megapixels", "seconds", "images", "width", "height")],
        f"(j.billable_units IS NULL OR TRY_CAST(j.billable_units AS DECIMAL(38,10)) IS NOT NULL)"]
    tail = "(_file, line) IN (SELECT file, line FROM _tails)" if tails else "false"
    return f"""SELECT * EXCLUDE (j, line), coalesce({' AND '.join(checks)}, false) AS _ok, {tail} AS _tail
        FROM (SELECT {cols}, j, line, _file
              FROM (SELECT file_index AS _file, line, TRY(from_json(line, '{_STRUCT}')) AS j FROM {source}))"""


@dataclass
class _File:
    """What is known of a ledger file before SQL reads it."""

    path: Path
    index: int
    whole: bool  # it has at least one whole line
    tail: str | None = None  # a partial last line (no newline yet), decoded; None if it has none
    torn: bool = False  # it has a partial last line
    suspect: bool = False  # read_file takes it (a byte-order mark the CSV reader would drop, zeros)


def _scan(path: Path, index: int) -> _File | None:
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return None
        f.seek(0)
        bom = f.read(3) == b"\xef\xbb\xbf"  # the CSV reader drops it; read_file keeps it (and rejects the line)
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return _File(path, index, whole=True, suspect=bom)
        keep = _last_newline(f, size)
        f.seek(keep)
        raw = f.read()
    try:
        tail = raw.decode("utf-8")
    except UnicodeDecodeError:  # the CSV reader rejects it, and read_file takes the file
        tail = None
    if tail is not None and "\x00" in tail:  # zeros a crash left at the end: no SQL literal holds them
        return _File(path, index, whole=keep > 0, torn=True, suspect=True)
    return _File(path, index, whole=keep > 0, tail=tail, torn=True, suspect=bom)


def _create_generations(con: duckdb.DuckDBPyConnection, files: list[_File]) -> set[int]:
    """CREATE TABLE generations from ``files`` (with the hidden _file, _ok, _tail); the indexes of
    files a read failed on (left out)."""
    tails = [(f.index, f.tail) for f in files if f.tail is not None]
    con.execute("CREATE OR REPLACE TEMP TABLE _tails (file INTEGER, line VARCHAR)")
    _insert(con, "_tails", tails, ["INTEGER", "VARCHAR"])
    unreadable: set[int] = set()

    def create(chosen: list[_File]) -> None:
        # file_index counts the files given from 0; the hidden _file is the file's index in the ledger
        source = (f"(SELECT {_sql_list(f.index for f in chosen)}[CAST(file_index AS BIGINT) + 1] AS file_index, "
                  f"line FROM {_lines([f.path for f in chosen])})")
        if not chosen:  # no rows: the same table, empty
            source = "(SELECT 0 AS file_index, '' AS line WHERE false)"
        con.execute(f"CREATE OR REPLACE TABLE generations AS "
                    f"{_generations_select(source, fast=True, tails=bool(tails))} ORDER BY time")

    try:
        create(files)
    except duckdb.Error:  # a file the CSV reader cannot take at all (a stray carriage return): find it
        for f in files:
            try:
                con.execute(f"SELECT count(*) FROM {_lines([f.path])}").fetchall()
            except duckdb.Error:
                unreadable.add(f.index)
        create([f for f in files if f.index not in unreadable])  # fails the refresh if that was not it
    return unreadable


def _rejected(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Files with lines the CSV reader rejected (bad UTF-8, the delimiter): they go to read_file."""
    try:
        return {p for (p,) in con.execute("SELECT DISTINCT file_path FROM reject_scans JOIN reject_errors "
                                          "USING (scan_id, file_id)").fetchall()}
    except duckdb.CatalogException:  # nothing was read as lines
        return set()


@dataclass
class _Ingested:
    problems: list[LedgerProblem]  # in the order read_rows meets them
    files: dict[int, Path]  # the hidden _file -> its path
    seen: dict[tuple[int, str], int]  # (_file, id) -> its place in its file, for rows read_file supplied


def _ingest(con: duckdb.DuckDBPyConnection, folder: Path, scratch: Path) -> _Ingested:
    """The generations table, with the hidden _file (the file's index among the ledger's files)."""
    files = [s for i, p in enumerate(ledger_files(folder)) if (s := _scan(p, i)) is not None]
    readable = [f for f in files if f.whole and not f.suspect]
    fallback = {f.index for f in files if f.suspect}
    fallback |= _create_generations(con, readable)
    counts = {file: (rows, bad, tails) for file, rows, bad, tails in con.execute("""
        SELECT _file, count(*) FILTER (WHERE NOT _tail), count(*) FILTER (WHERE NOT _ok AND NOT _tail),
               count(*) FILTER (WHERE _tail)
        FROM generations GROUP BY _file""").fetchall()}
    fallback |= {file for file, (_, bad, tails) in counts.items() if bad or tails > 1}
    rejected = _rejected(con)
    fallback |= {f.index for f in readable if str(f.path) in rejected}
    con.execute("DELETE FROM generations WHERE _tail")
    if fallback:
        con.execute(f"DELETE FROM generations WHERE _file IN ({', '.join(map(str, sorted(fallback)))})")

    problems: list[LedgerProblem] = []
    seen: dict[tuple[int, str], int] = {}
    inserted = False
    for f in files:
        if f.index in fallback:  # the ledger's own reader: every row and every problem, by line
            found: list[LedgerProblem] = []
            again = scratch / f"ledger-{f.index}.jsonl"
            with open(again, "w", encoding="utf-8") as out:
                for place, (row, _) in enumerate(read_file(f.path, found)):
                    out.write(row.to_line())
                    seen[(f.index, row.id)] = place
            if again.stat().st_size:
                source = f"(SELECT {f.index} AS _file, line FROM {_lines([again])})"
                con.execute(f"INSERT INTO generations {_generations_select(source, fast=False)}")
                inserted = True
            again.unlink()
            problems += found
        elif f.torn and _writer_gone(f.path):  # left for a live writer; reported once its writer is gone
            rows = counts.get(f.index, (0, 0, 0))[0]
            problems.append(LedgerProblem(f.path, rows + 1, TORN))
    if inserted:  # rows added after the sort: sort again (rare: only when a file needed read_file)
        con.execute("ALTER TABLE generations RENAME TO _unsorted; "
                    "CREATE TABLE generations AS SELECT * FROM _unsorted ORDER BY time; DROP TABLE _unsorted")
    return _Ingested(problems, {f.index: f.path for f in files}, seen)


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


def _ledger_order(files: dict[int, Path], rows: list[tuple[int, str]], seen: dict[tuple[int, str], int]
                  ) -> dict[tuple[int, str], tuple[int, int]]:
    """(file, id) -> its place in the ledger as read_rows meets it: the file, then where in the file.
    Rows read_file supplied are in ``seen``; the others are found by their id in their file."""
    out, wanted = {}, {}
    for file, rid in rows:
        if (file, rid) in seen:
            out[(file, rid)] = (file, seen[(file, rid)])
        else:
            wanted.setdefault(file, set()).add(rid)
    for file, ids in wanted.items():
        with open(files[file], "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            for rid in ids:  # a line SQL vouched for begins with its id, as to_line writes it
                out[(file, rid)] = (file, m.find(b'{"id":' + json.dumps(rid, ensure_ascii=False).encode()))
    return out


def _whatif(con: duckdb.DuckDBPyConnection, layout: DataLayout, episodes: list[tuple], files: dict[int, Path],
            seen: dict[tuple[int, str], int]) -> list[tuple]:
    """The season's usage re-priced on every image model: per series and provider, its distinct
    generated requests (of each request key the last row in the ledger's order, as read_rows meets
    them), grouped in DuckDB by what the price depends on; each group is quoted once."""
    book = load_pricebook(layout.pricebook)
    panels = {(s, e): int(p) for s, e, _, p in episodes}
    produced: dict[tuple[str, str], list[str]] = {
        (s, p): eps for s, p, eps in con.execute("""
            SELECT series, provider, list(DISTINCT episode) FROM generations
            WHERE episode <> '' AND status IN ('generated', 'cached') GROUP BY ALL""").fetchall()}
    made = """SELECT series, provider, request_key, _file, id,
                     {'width': width, 'height': height, 'images': images, 'inputs': CAST(inputs AS VARCHAR),
                      'reusable': reusable} AS r
              FROM generations  -- the model trial (episode '') is not the season's usage
              WHERE episode <> '' AND status = 'generated' AND width <> 0 AND height <> 0"""
    groups: dict[tuple, int] = {}
    mixed: list[tuple[str, str, str]] = []  # request keys made more than once, not alike each time
    for series, provider, key, r, n in con.execute(f"""
            WITH per_key AS (
                SELECT series, provider, request_key, min(r) AS r, min(r) IS DISTINCT FROM max(r) AS mixed
                FROM ({made}) GROUP BY series, provider, request_key)
            SELECT series, provider, CASE WHEN mixed THEN request_key END, r, count(*)
            FROM per_key GROUP BY ALL""").fetchall():
        if key is None:
            groups[(series, provider, *r.values())] = n
        else:
            mixed.append((series, provider, key))
    if mixed:  # of such a key the last row counts, as read_rows meets them
        con.execute("CREATE OR REPLACE TEMP TABLE _mixed (series VARCHAR, provider VARCHAR, request_key VARCHAR)")
        _insert(con, "_mixed", mixed, ["VARCHAR"] * 3)
        rows = con.execute(f"SELECT * FROM ({made}) SEMI JOIN _mixed USING (series, provider, request_key)").fetchall()
        order = _ledger_order(files, [(file, rid) for *_, file, rid, _ in rows], seen)
        last: dict[tuple, tuple] = {}
        for series, provider, key, file, rid, r in rows:
            if (series, provider, key) not in last or order[(file, rid)] >= last[(series, provider, key)][0]:
                last[(series, provider, key)] = (order[(file, rid)], r)
        for (series, provider, _), (_, r) in last.items():
            group = (series, provider, *r.values())
            groups[group] = groups.get(group, 0) + 1

    usage: dict[tuple[str, str], list[Usage]] = {}
    for (series, provider, width, height, images, inputs, reusable), n in sorted(
            groups.items(), key=lambda g: tuple((v is None, v) for v in g[0])):
        usage.setdefault((series, provider), []).append(
            Usage(width, height, images, tuple(tuple(p) for p in json.loads(inputs)), reusable, n))
    out = []
    for (series, provider), used in usage.items():
        eps = produced.get((series, provider), [])
        n_panels = sum(panels.get((series, e), 0) for e in eps)
        for m in platform_whatif(book, used):
            out.append((series, provider, len(eps), n_panels, m["platform"], m["model"], m["endpoints"],
                        m["max_references"], str(m["season_usd"]), str(m["one_time_usd"]), m["references_dropped"]))
    return out


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
            [tuple(r.get(c) for c in ("series", "action", "endpoint", "model", "reason")) for r in recs])


TRIAL_COLUMNS = ["series", "model", "platform", "endpoint", "cost_per_panel_usd", "consistency", "verdict", "scorer",
                 "variations", "character", "trial_spent_usd", "trial_quote_usd", "provider"]
_SMALL_TABLES = f"""
    CREATE TABLE ledger_problems (file VARCHAR, line INTEGER, reason VARCHAR);
    CREATE TABLE series_info (series VARCHAR, title VARCHAR, planned_episodes INTEGER,
      target_per_panel_usd {MONEY}, per_episode_budget_usd {MONEY});
    CREATE TABLE episodes (series VARCHAR, episode VARCHAR, title VARCHAR, panels INTEGER);
    CREATE TABLE _whatif_raw (series VARCHAR, provider VARCHAR, episodes INTEGER, panels INTEGER, platform VARCHAR,
      model VARCHAR, endpoints VARCHAR, max_references INTEGER, season_usd {MONEY}, one_time_usd {MONEY},
      references_dropped INTEGER);
    CREATE TABLE _trials (series VARCHAR, model VARCHAR, platform VARCHAR, endpoint VARCHAR,
      cost_per_panel_usd DECIMAL(18,6), consistency DOUBLE, verdict VARCHAR, scorer VARCHAR, variations INTEGER,
      character VARCHAR, trial_spent_usd {MONEY}, trial_quote_usd {MONEY}, provider VARCHAR);
    CREATE TABLE model_recommendation (series VARCHAR, action VARCHAR, endpoint VARCHAR, model VARCHAR,
      reason VARCHAR);
"""


def write_cost_tables(path: Path, layout: DataLayout, log: Callable[[str], None] = print) -> None:
    """Write the cost tables and views into a new DuckDB file at ``path``."""
    scratch = Path(f"{path}.d")  # DuckDB's spill and read_file's rows, beside the file; removed after
    scratch.mkdir(exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'; SET threads = {THREADS}; "
                    f"SET temp_directory = {_sql_literal(str(scratch))}")
        con.execute(_SMALL_TABLES)
        ingested = _ingest(con, layout.ledger_dir, scratch)
        problems = ingested.problems
        for p in problems:  # counted out of every sum, but never silently: named here and in ledger_problems
            log(f"cost tables: damaged ledger row, not counted: {p} (see `webtoon ledger verify`)")
        _insert(con, "ledger_problems", [(str(p.path), p.line, p.reason) for p in problems],
                ["VARCHAR", "INTEGER", "VARCHAR"])
        series_rows, episode_rows = _bible(layout, log)
        _insert(con, "series_info", series_rows, ["VARCHAR", "VARCHAR", "INTEGER", MONEY, MONEY])
        _insert(con, "episodes", episode_rows, ["VARCHAR", "VARCHAR", "VARCHAR", "INTEGER"])
        _insert(con, "_whatif_raw", _whatif(con, layout, episode_rows, ingested.files, ingested.seen),
                ["VARCHAR", "VARCHAR", "INTEGER", "INTEGER", "VARCHAR", "VARCHAR", "VARCHAR", "INTEGER", MONEY, MONEY,
                 "INTEGER"])
        for hidden in ("_file", "_ok", "_tail"):
            con.execute(f"ALTER TABLE generations DROP COLUMN {hidden}")
        trials, recs = _trials(layout)
        _insert(con, "_trials", trials, ["VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "DECIMAL(18,6)", "DOUBLE",
                                         "VARCHAR", "VARCHAR", "INTEGER", "VARCHAR", MONEY, MONEY, "VARCHAR"])
        _insert(con, "model_recommendation", recs, ["VARCHAR"] * 5)
        con.execute(SQL_VIEWS.read_text())
    finally:
        con.close()
        shutil.rmtree(scratch, ignore_errors=True)


def refresh_cost_tables(layout: DataLayout, log: Callable[[str], None] = print) -> Path | None:
    """Rebuild the DuckDB file. Never raises: the ledger stays the truth, and a failed refresh is
    logged and repaired by the next one."""
    target = layout.duckdb_path
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(target.with_name(f".{target.name}.lock")):
            with atomic_path(target) as tmp:  # named by host and pid, so a killed refresh's file is swept
                try:
                    write_cost_tables(tmp, layout, log)
                finally:
                    Path(f"{tmp}.wal").unlink(missing_ok=True)
            # A WAL beside the target belongs to the file just replaced (a read-write session a
            # user left open or killed): replayed onto the rebuilt file it would bring back stale
            # tables, or corrupt it. Users' own tables belong in their own database (README).
            Path(f"{target}.wal").unlink(missing_ok=True)
        return target
    except Exception as e:  # noqa: BLE001 - a cost-table refresh must never fail a generation step
        log(f"cost tables not refreshed ({type(e).__name__}: {e}); the ledger has every row")
        return None
