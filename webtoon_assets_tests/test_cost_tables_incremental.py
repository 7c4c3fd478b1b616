"""The cost tables are brought up to date incrementally (issue 11): after any change to the ledger
or the bible, the file an incremental refresh leaves holds exactly what a whole build makes, table
by table and view by view, and both hold what the ledger's own reader finds. A refresh reads only
what is new; a refresh that fails leaves the file readers have as it was."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import random
import socket
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest
import yaml

from webtoon_assets.costs import refresh_cost_tables, tables
from webtoon_assets.ledger import LedgerRow, read_rows, seal_torn_tails
from webtoon_assets_tests.conftest import SAMPLE, cost_sql

TIME = dt.datetime(2026, 11, 29, 1, 2, 3, 456789, tzinfo=dt.timezone.utc)
TINY = Decimal("0.00000001")


def gone_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def make_row(i: int, rng: random.Random) -> LedgerRow:
    """A varied row: statuses, providers, the model trial, one-time artifacts, tiny money, and
    request keys that repeat (alike, or made again at another size: the what-if's last row counts)."""
    status = rng.choice(["generated"] * 6 + ["cached"] * 3 + ["refused", "failed", "unknown", "reconciled"])
    provider = rng.choice(["local", "fal", "fal"])
    price = rng.choice([Decimal("0.005"), Decimal("0.012"), Decimal("0.045"), TINY, Decimal("0.0125")])
    billed = Decimal(0) if provider == "local" or status in ("cached", "refused") else price
    if status == "reconciled":
        billed = -price
    size = rng.choice([(1024, 768), (768, 1024), (1024, 1024)])
    return LedgerRow(
        time=TIME + dt.timedelta(seconds=rng.randrange(100_000)), run_id=f"r{rng.randrange(4)}", series=SAMPLE,
        episode=rng.choice(["ep01", "ep02", "ep03", "ep01", ""]), asset=rng.choice(["panels", "characters"]),
        item=f"p{i}", reusable=rng.random() < 0.3, provider=provider, endpoint="fal-ai/flux-2/flash",
        request_key=f"k{rng.randrange(25)}", status=status, billed_usd=billed, list_usd=price, credits=price * 120,
        width=size[0] if status in ("generated", "cached") else None,
        height=size[1] if status in ("generated", "cached") else None,
        images=rng.choice([None, 1, 2]), inputs=rng.choice([[], [(1024, 1024)], [(768, 1024), (1024, 1024)]]),
        settles="x" if status == "reconciled" else None, error="boom" if status == "failed" else None)


class World:
    """A ledger that changes as a run, a crash, a hand edit or a copy would change it."""

    def __init__(self, layout, rng: random.Random):
        self.layout, self.rng = layout, rng
        self.folder = layout.ledger_dir
        self.folder.mkdir(parents=True, exist_ok=True)
        self.made = 0
        self.files = 0
        self.partial: dict[Path, str] = {}  # a file's torn last line: what its writer never wrote
        self.gone = gone_pid()

    def lines(self, k: int) -> str:
        self.made += k
        return "".join(make_row(self.made - j, self.rng).to_line() for j in range(k))

    def ledger(self) -> list[Path]:
        return sorted(self.folder.glob("*.jsonl"))

    def whole(self) -> list[Path]:  # files a writer may append to (no torn tail)
        return [p for p in self.ledger() if p not in self.partial]

    def pick(self, files: list[Path]) -> Path | None:
        return self.rng.choice(files) if files else None

    # -- the changes --------------------------------------------------------------------------
    def new_file(self) -> str:
        self.files += 1
        pid = os.getpid() if self.rng.random() < 0.2 else self.gone  # this process: a writer still alive
        path = self.folder / f"20261129T{self.files:06d}-{socket.gethostname()}-{pid}-1.jsonl"
        path.write_text(self.lines(self.rng.randrange(1, 12)))
        return f"new file {path.name}"

    def append(self) -> str:
        path = self.pick(self.whole())
        if path is None:
            return self.new_file()
        with open(path, "a") as f:
            f.write(self.lines(self.rng.randrange(1, 6)))
        return f"append to {path.name}"

    def torn(self) -> str:
        path = self.pick(self.whole())
        if path is None:
            return "nothing to tear"
        line = self.lines(1)
        cut = self.rng.randrange(1, len(line))  # at worst only its newline is missing
        with open(path, "a") as f:
            f.write(line[:cut])
        self.partial[path] = line[cut:]
        return f"torn tail on {path.name}"

    def complete(self) -> str:
        if not self.partial:
            return self.torn()
        path = self.rng.choice(sorted(self.partial))
        with open(path, "a") as f:
            f.write(self.partial.pop(path))
        return f"torn tail completed on {path.name}"

    def seal(self) -> str:
        for path in seal_torn_tails(self.folder):
            self.partial.pop(path, None)
        return "sealed"

    def damage_old(self) -> str:
        """A digit flipped in an early row, in place: the same inode, the same size."""
        path = self.pick([p for p in self.ledger() if p.read_bytes().count(b"\n") >= 1])
        if path is None:
            return self.new_file()
        data = path.read_bytes()
        starts = [0] + [i + 1 for i, b in enumerate(data) if b == 10][:-1]
        at = self.rng.choice(starts[: max(1, len(starts) // 2)]) + 10  # inside the row's id (hex)
        with open(path, "r+b") as f:
            f.seek(at)
            f.write(b"g" if data[at:at + 1] != b"g" else b"h")
        return f"damaged an old row of {path.name}"

    def damage_new(self) -> str:
        path = self.pick(self.whole())
        if path is None:
            return self.new_file()
        with open(path, "a") as f:
            f.write(self.lines(1).replace('"billed_usd":"', '"billed_usd":"9', 1) + "{not json\n" + self.lines(1))
        return f"appended damaged rows to {path.name}"

    def legacy(self) -> str:
        path = self.pick(self.whole())
        if path is None:
            return self.new_file()
        rows = [make_row(self.made + j, self.rng) for j in range(2)]
        self.made += 2
        with open(path, "a") as f:
            f.write("".join(r.model_dump_json(exclude={"id", "settles", "note"}) + "\n" for r in rows))
        return f"appended rows of the old format to {path.name}"

    def crlf(self) -> str:
        path = self.pick(self.whole())
        if path is None:
            return self.new_file()
        with open(path, "ab") as f:
            f.write(self.lines(1).replace("\n", "\r\n").encode())
        return f"appended a CRLF row to {path.name}"

    def truncate(self) -> str:
        path = self.pick(self.whole())
        if path is None:
            return self.new_file()
        data = path.read_bytes()
        keep = data[: data.rfind(b"\n", 0, max(0, len(data) - 1)) + 1]
        with open(path, "r+b") as f:
            f.truncate(len(keep))
        return f"truncated {path.name}"

    def delete(self) -> str:
        path = self.pick(self.ledger())
        if path is None:
            return self.new_file()
        path.unlink()
        self.partial.pop(path, None)
        return f"deleted {path.name}"

    def replace(self) -> str:
        """Another file with the same name (a copy put back): a new inode; sometimes the same
        beginning and more."""
        path = self.pick(self.ledger())
        if path is None:
            return self.new_file()
        text = path.read_text(errors="replace") if self.rng.random() < 0.5 else ""
        text = text[: text.rfind("\n") + 1] + self.lines(self.rng.randrange(1, 5))
        other = path.with_suffix(".new")
        other.write_text(text)
        os.replace(other, path)
        self.partial.pop(path, None)
        return f"replaced {path.name}"

    def bible(self) -> str:
        series = self.layout.series_dir(SAMPLE) / "series.yaml"
        data = yaml.safe_load(series.read_text())
        data["budget"]["target_per_panel_usd"] = self.rng.choice([0.01, 0.05, 0.1])
        data["planned_episodes"] = self.rng.choice([3, 10])
        series.write_text(yaml.safe_dump(data))
        episodes = self.layout.episodes_dir(SAMPLE)
        extra = episodes / "ep04.txt"
        if extra.exists():
            extra.unlink()
        else:
            extra.write_text((episodes / "ep03.txt").read_text())
        return "bible changed"

    def changes(self) -> list:
        """Every kind of change once, in an order of this world's own, then a few more at random."""
        kinds = [self.append, self.append, self.new_file, self.torn, self.complete, self.seal, self.damage_old,
                 self.damage_new, self.legacy, self.crlf, self.truncate, self.delete, self.replace, self.bible]
        self.rng.shuffle(kinds)
        return kinds + [self.rng.choice([self.append, self.new_file, self.torn, self.complete, self.replace])
                        for _ in range(3)]


# -- what a file holds --------------------------------------------------------------------------
def contents(db: Path) -> dict[str, tuple[list, list]]:
    """Every table and view: its columns and types, and its rows (in order for ledger_problems,
    which is kept in the order read_rows meets them; as a multiset for the rest)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        names = [n for (n,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE NOT internal AND NOT temporary UNION ALL "
            "SELECT view_name FROM duckdb_views() WHERE NOT internal AND NOT temporary").fetchall()]
        out = {}
        for name in sorted(names):
            if name == "_ledger_places":  # where read_file's rows end: only for the lines read_file read
                continue
            query = f'SELECT * FROM "{name}"'
            if name == "_ledger_ingested":  # ctime_ns: -1 for a file too recent when read
                query = "SELECT * EXCLUDE (ctime_ns) FROM _ledger_ingested"
            rows = con.execute(query).fetchall()
            cols = [(d[0], str(d[1])) for d in con.description]
            out[name] = (cols, rows if name == "ledger_problems" else sorted(rows, key=repr))
        return out
    finally:
        con.close()


def assert_same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name][0] == want[name][0], name
        assert len(got[name][1]) == len(want[name][1]), name
        assert got[name][1] == want[name][1], name


def assert_as_the_ledger_says(layout, db: Path) -> None:
    problems: list = []
    rows = list(read_rows(layout.ledger_dir, problems))
    con = duckdb.connect(str(db), read_only=True)
    try:
        ids = sorted(i for (i,) in con.execute("SELECT id FROM generations").fetchall())
        sums = con.execute("SELECT sum(spent_usd), sum(counted_usd), sum(list_usd) FROM generations").fetchone()
        found = con.execute("SELECT file, line, reason FROM ledger_problems").fetchall()
    finally:
        con.close()
    assert ids == sorted(r.id for r in rows)
    if rows:
        assert sums == (sum(r.billed_usd for r in rows), sum(r.counted_usd for r in rows),
                        sum(r.list_usd for r in rows))
    assert found == [(str(p.path), p.line, p.reason) for p in problems]


@pytest.fixture
def builds(monkeypatch) -> list[str]:
    """How each refresh built the file: 'incremental' (over a copy of the last one) or 'whole'."""
    kinds: list[str] = []
    real = tables._old_state

    def spy(con, layout):
        state = real(con, layout)
        kinds.append("whole" if state is None else "incremental")
        return state

    monkeypatch.setattr(tables, "_old_state", spy)
    real_write = tables.write_cost_tables

    def write(path, layout, log=print, reuse=False):
        if not reuse:
            kinds.append("whole")
        return real_write(path, layout, log, reuse)

    monkeypatch.setattr(tables, "write_cost_tables", write)
    return kinds


@pytest.fixture
def reads(monkeypatch) -> dict[str, list]:
    """What a refresh read: the pieces SQL read (file, start, end, in place) and the files the
    ledger's own reader read (by name: it may read a copy of the piece, named as its file)."""
    seen: dict[str, list] = {"sql": [], "python": [], "hashed": []}
    real_load, real_read, real_range = tables._load, tables.read_file, tables._read_range

    def load(con, pieces, create):
        seen["sql"] += [(p.path.name, p.start, p.end, p.source is None) for p in pieces]
        return real_load(con, pieces, create)

    def read(path, problems=None, start=0):
        seen["python"].append(Path(path).name)
        return real_read(path, problems, start)

    def read_range(f, start, end, hasher, out=None):
        seen["hashed"].append((Path(f.name).name, start, end))
        return real_range(f, start, end, hasher, out)

    monkeypatch.setattr(tables, "_load", load)
    monkeypatch.setattr(tables, "read_file", read)
    monkeypatch.setattr(tables, "_read_range", read_range)
    return seen


def refresh(layout, full: bool | None = None) -> list[str]:
    notes: list[str] = []
    assert refresh_cost_tables(layout, log=notes.append, full=full) == layout.duckdb_path, notes
    assert not [n for n in notes if "built whole" in n], notes  # the incremental path never failed
    return notes


def whole_build(layout, tmp_path: Path) -> Path:
    db = tmp_path / "whole.duckdb"
    db.unlink(missing_ok=True)
    tables.write_cost_tables(db, layout, log=lambda _: None)
    return db


# -- the tests ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed, trusted", [(0, False), (1, False), (2, True), (3, True)],
                         ids=["recent-files-0", "recent-files-1", "quiet-files-2", "quiet-files-3"])
def test_an_incremental_refresh_equals_a_whole_build_after_every_change(layout, tmp_path, monkeypatch, builds,
                                                                        seed, trusted):
    """A random run of changes: rows appended, new files, torn tails completed or sealed, old rows
    damaged in place, rows of the old format, CRLF, truncation, deletion, replacement by another
    file of the same name, the bible. After each, the incremental file is the whole build, exactly.
    ``trusted``: files count as quiet at once (their stat is trusted, and SQL reads them in place);
    else every file is too recent (read from copies, checked by their bytes)."""
    if trusted:
        monkeypatch.setattr(tables, "RACY_NS", -10**12)
    world = World(layout, random.Random(seed))
    for _ in range(3):
        world.new_file()
    refresh(layout)
    assert builds == ["whole"]
    history = []
    for change in world.changes():
        history.append(change())
        refresh(layout)
        assert builds[-1] == "incremental", history
        incremental = contents(layout.duckdb_path)
        assert_same(incremental, contents(whole_build(layout, tmp_path)))
        assert_as_the_ledger_says(layout, layout.duckdb_path)


@pytest.mark.parametrize("trusted", [False, True], ids=["recent-files", "quiet-files"])
def test_a_refresh_with_no_ledger_change_reads_no_row_but_takes_the_bible_again(layout, tmp_path, monkeypatch,
                                                                              builds, reads, trusted):
    if trusted:
        monkeypatch.setattr(tables, "RACY_NS", -10**12)
    world = World(layout, random.Random(7))
    for _ in range(3):
        world.new_file()
    world.damage_new()  # a file that needed the ledger's own reader
    world.torn()
    refresh(layout)
    for seen in reads.values():
        seen.clear()
    series = layout.series_dir(SAMPLE) / "series.yaml"
    series.write_text(series.read_text().replace("target_per_panel_usd: 0.05", "target_per_panel_usd: 0.07"))

    refresh(layout)
    assert builds[-1] == "incremental"
    assert reads["sql"] == [] and reads["python"] == []  # not a line parsed
    if trusted:  # nor a byte read: every file's stat is as it was
        assert reads["hashed"] == []
    else:  # files too recent to trust their stat are checked by their bytes, and nothing is new
        assert {name for name, start, _ in reads["hashed"]} == {p.name for p in world.ledger()}
    assert [t for (t,) in cost_sql(layout, "SELECT target_per_panel_usd FROM series_info")] == [Decimal("0.07")]
    assert_same(contents(layout.duckdb_path), contents(whole_build(layout, tmp_path)))


def test_only_the_lines_appended_are_read_and_a_damaged_one_is_reported_at_its_line(layout, tmp_path, monkeypatch,
                                                                                   reads):
    monkeypatch.setattr(tables, "RACY_NS", -10**12)
    world = World(layout, random.Random(3))
    world.new_file()
    path = world.ledger()[0]
    with open(path, "a") as f:
        f.write(world.lines(40))
    refresh(layout)
    assert reads["sql"] == [(path.name, 0, path.stat().st_size, True)]  # read in place, whole
    before = path.stat().st_size
    lines_before = path.read_bytes().count(b"\n")
    for seen in reads.values():
        seen.clear()
    world.damage_new()  # three lines: a changed digit, not JSON, a whole row
    after = path.stat().st_size

    refresh(layout)
    assert reads["sql"] == [(path.name, before, after, False)]  # only the new lines, from a copy
    assert reads["python"] == [path.name]  # and, as SQL found a problem in them, by the ledger's reader
    assert reads["hashed"][0] == (path.name, 0, before)  # what was read before is checked, not read again
    problems = cost_sql(layout, "SELECT file, line FROM ledger_problems")
    assert problems == [(str(path), lines_before + 1), (str(path), lines_before + 2)]
    assert_same(contents(layout.duckdb_path), contents(whole_build(layout, tmp_path)))
    assert_as_the_ledger_says(layout, layout.duckdb_path)


def test_a_file_rewritten_in_place_is_read_again_whole(layout, tmp_path, monkeypatch, reads):
    monkeypatch.setattr(tables, "RACY_NS", -10**12)
    world = World(layout, random.Random(4))
    world.new_file()
    path = world.ledger()[0]
    with open(path, "a") as f:
        f.write(world.lines(10))
    refresh(layout)
    (before,), = cost_sql(layout, "SELECT count(*) FROM generations")
    for seen in reads.values():
        seen.clear()
    data = path.read_bytes()
    with open(path, "r+b") as f:  # line 2: its id changed (same size, same inode)
        f.seek(data.index(b"\n") + 10)
        f.write(b"g")
    with open(path, "a") as f:
        f.write(world.lines(2))

    refresh(layout)
    assert [(name, start) for name, start, _, _ in reads["sql"]] == [(path.name, 0)]  # whole again
    assert cost_sql(layout, "SELECT line FROM ledger_problems") == [(2,)]
    assert cost_sql(layout, "SELECT count(*) FROM generations") == [(before - 1 + 2,)]
    assert_same(contents(layout.duckdb_path), contents(whole_build(layout, tmp_path)))


def test_a_torn_tail_is_reported_once_its_writer_dies_though_its_file_never_changed(layout, tmp_path, monkeypatch,
                                                                                   reads):
    monkeypatch.setattr(tables, "RACY_NS", -10**12)
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        world = World(layout, random.Random(5))
        path = layout.ledger_dir / f"20261129T000001-{socket.gethostname()}-{writer.pid}-1.jsonl"
        path.write_text(world.lines(3) + world.lines(1)[:50])
        refresh(layout)
        assert cost_sql(layout, "SELECT count(*) FROM ledger_problems") == [(0,)]  # its writer may finish it
    finally:
        writer.kill()
        writer.wait()
    for seen in reads.values():
        seen.clear()
    refresh(layout)
    assert reads == {"sql": [], "python": [], "hashed": []}  # the file is as it was
    assert cost_sql(layout, "SELECT file, line, reason FROM ledger_problems") == [(str(path), 4, tables.TORN)]
    assert_same(contents(layout.duckdb_path), contents(whole_build(layout, tmp_path)))


def test_a_file_a_writer_appends_to_while_sql_reads_it_is_read_again_from_a_copy(layout, tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "RACY_NS", -10**12)
    world = World(layout, random.Random(6))
    world.new_file()
    world.new_file()
    path = world.ledger()[0]
    real = tables._load
    loads: list[list[tuple]] = []

    def load(con, pieces, create):  # a writer appends while SQL reads the file in place
        loads.append([(p.path.name, p.start, p.end, p.source is None) for p in pieces])
        if len(loads) == 1:
            with open(path, "a") as f:
                f.write(world.lines(2))
        return real(con, pieces, create)

    monkeypatch.setattr(tables, "_load", load)
    refresh(layout)
    size = path.stat().st_size
    assert loads[1] == [(path.name, 0, size, False)]  # read again, up to what it held then
    assert_same(contents(layout.duckdb_path), contents(whole_build(layout, tmp_path)))
    assert_as_the_ledger_says(layout, layout.duckdb_path)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("where", ["_whatif", "_whatif_keys", "_load"])
def test_a_failed_refresh_leaves_the_file_its_readers_have_as_it_was(layout, tmp_path, monkeypatch, where):
    world = World(layout, random.Random(8))
    world.new_file()
    refresh(layout)
    before = digest(layout.duckdb_path)
    (count,), = cost_sql(layout, "SELECT count(*) FROM generations")
    reader = duckdb.connect(str(layout.duckdb_path), read_only=True)
    try:
        world.append()
        world.new_file()

        def fail(*args, **kwargs):
            raise RuntimeError("disk full")

        real = getattr(tables, where)
        monkeypatch.setattr(tables, where, fail)
        notes: list[str] = []
        assert refresh_cost_tables(layout, log=notes.append) is None
        assert any("cost tables not refreshed (RuntimeError: disk full)" in n for n in notes), notes
        assert digest(layout.duckdb_path) == before  # never written
        assert reader.execute("SELECT count(*) FROM generations").fetchone() == (count,)
    finally:
        reader.close()
    assert cost_sql(layout, "SELECT count(*) FROM generations") == [(count,)]
    assert not list(layout.root.glob(".webtoon.duckdb.*.tmp*"))
    monkeypatch.setattr(tables, where, real)
    refresh(layout)  # the next refresh brings it up to date
    assert_same(contents(layout.duckdb_path), contents(whole_build(layout, tmp_path)))
    assert_as_the_ledger_says(layout, layout.duckdb_path)


def test_a_cost_file_someone_wrote_to_is_built_whole(layout, tmp_path, builds):
    world = World(layout, random.Random(9))
    world.new_file()
    refresh(layout)
    con = duckdb.connect(str(layout.duckdb_path))  # a read-write session (README: keep your own tables elsewhere)
    con.execute("DELETE FROM generations WHERE true")
    con.execute("CREATE TABLE mine (x INT)")
    con.close()
    world.append()
    refresh(layout)
    assert builds[-1] == "whole"
    assert_same(contents(layout.duckdb_path), contents(whole_build(layout, tmp_path)))
    assert_as_the_ledger_says(layout, layout.duckdb_path)


def test_a_file_of_another_format_or_a_forced_refresh_is_built_whole(layout, tmp_path, monkeypatch, builds):
    world = World(layout, random.Random(10))
    world.new_file()
    refresh(layout)
    world.append()
    real = tables._format
    monkeypatch.setattr(tables, "_format", lambda: "another")
    refresh(layout)
    assert builds == ["whole", "whole"]
    monkeypatch.setattr(tables, "_format", real)
    refresh(layout)  # (the format changed back: whole again)
    refresh(layout)
    assert builds[-1] == "incremental"
    refresh(layout, full=True)
    assert builds[-1] == "whole"
    monkeypatch.setenv(tables.FULL_ENV, "1")
    refresh(layout)
    assert builds[-1] == "whole"
    assert_same(contents(layout.duckdb_path), contents(whole_build(layout, tmp_path)))


def test_a_file_written_again_within_a_tick_of_its_ctime_clock_is_checked_by_its_bytes(layout, monkeypatch):
    """A file written just before a refresh may be written again within the same tick of the clock
    its ctime comes from: its stat would look unchanged. So the ctime of a file that recent is not
    trusted, and the next refresh checks its bytes."""
    world = World(layout, random.Random(11))
    world.new_file()
    path = world.ledger()[0]
    first = os.stat(path)
    refresh(layout)  # the file is a moment old
    data = path.read_bytes()
    with open(path, "r+b") as f:  # the first row's id changed: the same size, the same inode
        f.seek(10)
        f.write(b"g" if data[10:11] != b"g" else b"h")
    real = os.fstat

    def fstat(fd):  # the clock has not ticked since the first write
        st = real(fd)
        if st.st_ino != first.st_ino:
            return st
        return SimpleNamespace(st_ino=st.st_ino, st_size=st.st_size, st_ctime_ns=first.st_ctime_ns)

    monkeypatch.setattr(tables.os, "fstat", fstat)
    refresh(layout)
    assert cost_sql(layout, "SELECT file, line FROM ledger_problems") == [(str(path), 1)]


def test_what_an_artifact_made_twice_costs_does_not_depend_on_the_order_of_the_rows(layout, tmp_path):
    """A refresh puts the rows of a file read again after the others; no table or view may depend
    on where rows sit (amortization took `any_value` of an artifact's cost: now the first made)."""
    world = World(layout, random.Random(12))
    base = make_row(0, world.rng).model_copy(update=dict(
        episode="ep01", asset="characters", reusable=True, status="generated", provider="fal", request_key="kx",
        width=1024, height=1024))
    first, again = (base.model_copy(update=dict(id=f"id{i}", time=TIME + dt.timedelta(hours=i), episode=ep,
                                                billed_usd=usd, list_usd=usd))
                    for i, (ep, usd) in enumerate([("ep01", Decimal("0.005")), ("ep02", Decimal("0.012"))]))
    one = layout.ledger_dir / f"20261129T000001-{socket.gethostname()}-{world.gone}-1.jsonl"
    two = layout.ledger_dir / f"20261129T000002-{socket.gethostname()}-{world.gone}-1.jsonl"
    one.write_text(first.to_line())
    two.write_text(again.to_line())
    refresh(layout)
    put_back = one.with_suffix(".tmp")  # the same file put back under a new inode (written before the
    put_back.write_text(one.read_text())  # old one goes, so the filesystem cannot reuse its inode): read
    os.replace(put_back, one)  # again, its row now after the other
    refresh(layout)
    assert [i for (i,) in cost_sql(layout, "SELECT id FROM generations")] == ["id1", "id0"]
    shared = cost_sql(layout, "SELECT sum(shared_usd) FROM amortization")
    assert shared == [(Decimal("0.005") * 2 / 10,)]  # the first made: over the 2 episodes made of 10 planned
    assert_same(contents(layout.duckdb_path), contents(whole_build(layout, tmp_path)))
