"""The cost tables read the ledger with DuckDB (issue 11): every whole row counted, exactly; every
damaged row counted nowhere and reported by file and line, as the ledger's own reader reports it."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from webtoon_assets.costs import refresh_cost_tables, tables
from webtoon_assets.costs.whatif import Usage, platform_whatif
from webtoon_assets.ledger import LedgerRow, parse_line, read_rows
from webtoon_assets.pricing import load_pricebook

TIME = dt.datetime(2026, 11, 29, 1, 2, 3, 456789, tzinfo=dt.timezone.utc)
from webtoon_assets_tests.conftest import cost_sql


def row(i: int, **kw) -> LedgerRow:
    fields = dict(time=TIME + dt.timedelta(seconds=i), run_id="r", series="lantern_street", episode="ep01",
                  asset="panels", item=f"p{i}", reusable=False, provider="fal", endpoint="fal-ai/flux-2/flash",
                  request_key=f"k{i}", status="generated", billed_usd=Decimal("0.005"), list_usd=Decimal("0.005"),
                  credits=Decimal("0.6"), width=1024, height=768, inputs=[(1024, 1024)])
    return LedgerRow(**{**fields, **kw})


def gone_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def ledger_file(layout, pid: int, n: int = 1) -> Path:
    """A ledger file named as its writer (this host, ``pid``) names it."""
    layout.ledger_dir.mkdir(parents=True, exist_ok=True)
    return layout.ledger_dir / f"20261129T00000{n}-{socket.gethostname()}-{pid}-1.jsonl"


@pytest.fixture
def python_reads(monkeypatch) -> list[str]:
    """The ledger files the ledger's own (slow) reader was asked for (by name: it may read a copy of
    the lines to read, named as their file): only those SQL would not vouch for."""
    asked: list[str] = []
    real = tables.read_file

    def spy(path, problems=None, start=0):
        asked.append(Path(path).name)
        return real(path, problems, start)

    monkeypatch.setattr(tables, "read_file", spy)
    return asked


def refresh(layout) -> list[str]:
    notes: list[str] = []
    assert refresh_cost_tables(layout, log=notes.append) == layout.duckdb_path, notes
    return notes


def as_read_rows(layout) -> tuple[list[LedgerRow], list[tuple[str, int, str]]]:
    problems: list = []
    rows = list(read_rows(layout.ledger_dir, problems))
    return rows, [(str(p.path), p.line, p.reason) for p in problems]


def test_a_damaged_row_mid_file_is_reported_by_line_and_counted_nowhere_while_its_neighbours_count(
        layout, python_reads):
    clean = ledger_file(layout, gone_pid(), 1)
    clean.write_text("".join(row(i).to_line() for i in range(4)))
    damaged = ledger_file(layout, gone_pid(), 2)
    lines = [row(10 + i).to_line() for i in range(5)]
    lines[2] = lines[2].replace('"billed_usd":"0.005"', '"billed_usd":"0.004"')  # a flipped digit, line 3
    damaged.write_text("".join(lines))
    notes = refresh(layout)

    counted = {r for (r,) in cost_sql(layout, "SELECT item FROM generations")}
    assert counted == {f"p{i}" for i in (0, 1, 2, 3, 10, 11, 13, 14)}
    (spent,), = cost_sql(layout, "SELECT sum(spent_usd) FROM generations")
    assert spent == Decimal("0.005") * 8
    problems = cost_sql(layout, "SELECT file, line, reason FROM ledger_problems")
    assert problems == [(str(damaged), 3, "checksum does not match: the row was changed or damaged after it "
                                          "was written")]
    assert problems == as_read_rows(layout)[1]
    assert [n for n in notes if "damaged ledger row" in n] == [
        f"cost tables: damaged ledger row, not counted: {damaged}:3: {problems[0][2]} (see `webtoon ledger verify`)"]
    assert python_reads == [damaged.name]  # the clean file was read by SQL alone


def test_rows_of_the_old_format_still_count_with_the_same_stable_id(layout):
    old = ledger_file(layout, gone_pid(), 1)
    old.write_text("".join(row(i).model_dump_json(exclude={"id", "settles", "note"}) + "\n" for i in range(3)))
    ledger_file(layout, gone_pid(), 2).write_text(row(9).to_line())
    refresh(layout)
    rows, problems = as_read_rows(layout)
    assert problems == [] and cost_sql(layout, "SELECT count(*) FROM ledger_problems") == [(0,)]
    assert sorted(cost_sql(layout, "SELECT id, item, spent_usd FROM generations")) == sorted(
        (r.id, r.item, r.billed_usd) for r in rows)
    assert sum(r.id.startswith("legacy-") for r in rows) == 3


def test_a_torn_last_line_is_never_counted_and_is_reported_once_its_writer_is_gone(layout, python_reads):
    dead = ledger_file(layout, gone_pid(), 1)
    dead.write_text(row(1).to_line() + row(2).to_line() + row(3).to_line()[:40])  # killed mid-append
    live = ledger_file(layout, os.getpid(), 2)  # this process: a writer still appending
    live.write_text(row(4).to_line() + row(5).to_line()[:-1])  # the whole row, its newline not yet written
    only = ledger_file(layout, gone_pid(), 3)
    only.write_text(row(6).to_line()[:100])  # nothing but a partial line
    refresh(layout)

    assert sorted(cost_sql(layout, "SELECT item FROM generations")) == [("p1",), ("p2",), ("p4",)]
    torn = "torn write: the process died mid-append (the next writer seals it)"
    problems = cost_sql(layout, "SELECT file, line, reason FROM ledger_problems")
    assert problems == [(str(dead), 3, torn), (str(only), 1, torn)] == as_read_rows(layout)[1]
    assert python_reads == []  # the whole lines were read by SQL, the partial ones left out


def test_money_stays_exact_over_many_tiny_amounts(layout, python_reads):
    tiny = Decimal("0.00000001")
    lines = [row(i, billed_usd=tiny, list_usd=tiny, credits=tiny * 120).to_line() for i in range(20_000)]
    assert '"billed_usd":"1E-8"' in lines[0]  # as the ledger writes a Decimal
    lines.append(row(99_999, billed_usd=Decimal("12345.67890123"), list_usd=Decimal("0.1")).to_line())
    ledger_file(layout, gone_pid()).write_text("".join(lines))
    refresh(layout)
    (spent, counted, quote, kind), = cost_sql(layout, "SELECT sum(spent_usd), sum(counted_usd), sum(quote_usd), "
                                                 "typeof(any_value(spent_usd)) FROM generations")
    assert kind == "DECIMAL(18,8)"
    assert spent == counted == Decimal("12345.67890123") + tiny * 20_000 == Decimal("12345.67910123")
    assert quote == Decimal("0.1") + tiny * 20_000
    assert python_reads == []


def test_every_row_and_every_problem_is_what_the_ledger_reader_finds(layout):
    """A ledger with every kind of damage: the tables count exactly the rows read_rows yields and
    report exactly the problems it reports, in its order."""
    gone = gone_pid()
    good = [row(i).to_line() for i in range(40)]
    ledger_file(layout, gone, 1).write_text("".join(good[:5]) + "{not json\n" + '{"id": "x", "sum": "y"}\n' + "\n"
                                            + "".join(good[5:8]))
    ledger_file(layout, gone, 2).write_bytes("".join(good[8:11]).replace("\n", "\r\n").encode())  # CRLF
    ledger_file(layout, gone, 3).write_bytes(b"\xef\xbb\xbf" + "".join(good[11:14]).encode())  # byte-order mark
    ledger_file(layout, gone, 4).write_bytes(good[14].encode() + b'{"a":"\xff"}\n' + good[15].encode())  # not UTF-8
    ledger_file(layout, gone, 5).write_bytes(good[16].encode() + b'{"a":"\x01"}\n' + good[17].encode())
    body = row(18).model_dump_json(exclude_none=True)[:-1] + ',"extra":1}'  # checksummed, but not a ledger row
    foreign = f'{body[:-1]},"sum":"{hashlib.sha256(body.encode()).hexdigest()[:16]}"}}\n'
    ledger_file(layout, gone, 6).write_text(good[19] + foreign + good[20])
    ledger_file(layout, gone, 7).write_text("")
    ledger_file(layout, gone, 9).write_bytes(good[21].encode() + b"\x00" * 12)  # zeros a crash left behind
    tricky = [row(30, error='quote " backslash \\ newline \n tab \t é 😀 \u2028', note="/x"),
              row(31, time=dt.datetime(2026, 11, 29, 5, 0, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))),
              row(32, width=0, height=0, inputs=[]), row(33, provider="local", status="cached", billed_usd=Decimal(0)),
              row(34, provider="local"), row(35, status="reconciled", billed_usd=Decimal("-0.005"), settles="abc"),
              row(36, units=Decimal("2"), unit="megapixel", megapixels=Decimal("2.000001"), images=2,
                  seconds=Decimal("1.5"), billable_units=Decimal("3"), provider_request_id="rq",
                  inputs=[(1, 2), (3, 4), (5, 6), (7, 8), (9, 10)]),
              row(37, episode=""), row(38, status="unknown"), row(39, status="refused", error="over budget")]
    ledger_file(layout, gone, 8).write_text("".join(r.to_line() for r in tricky))
    refresh(layout)

    rows, problems = as_read_rows(layout)
    assert len(rows) == 27 and len(problems) == 11
    assert cost_sql(layout, "SELECT file, line, reason FROM ledger_problems") == problems
    got = cost_sql(layout, "SELECT id, id, time, status, spent_usd, quote_usd, saved_usd, counted_usd, list_usd, credits, "
                      "units, megapixels, images, seconds, width, height, n_inputs, inputs::VARCHAR, error, note "
                      "FROM generations")
    want = [(r.id, r.id, r.time, r.status, r.billed_usd, r.list_usd if r.status == "generated" else 0,
             r.list_usd if r.status == "cached" else 0, r.counted_usd, r.list_usd, r.credits, r.units, r.megapixels,
             r.images, r.seconds, r.width, r.height, len(r.inputs), str([list(p) for p in r.inputs]), r.error, r.note)
            for r in rows]
    assert {g[0]: g[1:] for g in got} == {w[0]: w[1:] for w in want} and len(got) == len(want)


def test_the_whatif_prices_each_group_of_alike_requests_once_and_equals_pricing_every_row():
    book = load_pricebook(Path(__file__).resolve().parent.parent / "data" / "pricebook.yaml")
    rows = [row(i, width=w, height=h, images=n, inputs=inputs, reusable=reusable)
            for i, (w, h, n, inputs, reusable) in enumerate(
                [(1024, 768, None, [], False), (1024, 768, 1, [], False), (768, 1024, 2, [(1024, 1024)], True)] * 7
                + [(2048, 2048, 1, [(1024, 1024)] * 6, False)] * 3 + [(512, 512, None, [(700, 700)], True)])]
    groups: dict[tuple, int] = {}
    for r in rows:
        key = (r.width, r.height, r.images, tuple(r.inputs), r.reusable)
        groups[key] = groups.get(key, 0) + 1
    grouped = [Usage(*key, count=n) for key, n in groups.items()]
    assert len(grouped) == 5
    assert platform_whatif(book, grouped) == platform_whatif(book, rows)


def test_the_whatif_in_the_tables_is_the_last_row_of_each_request_priced_row_by_row(layout):
    """Per series and provider, each request key's last generated row (as read_rows meets them),
    priced one by one, gives what the tables hold, also where a key was made again differently."""
    gone = gone_pid()
    first = [row(i, request_key=f"k{i % 6}", width=1024 if i % 2 else 768, inputs=[(1024, 1024)] * (i % 3),
                  reusable=i % 4 == 0, provider="local" if i % 5 == 0 else "fal") for i in range(30)]
    again = [row(100 + i, request_key=f"k{i % 6}", width=640, images=2, reusable=True) for i in range(3)]
    ledger_file(layout, gone, 1).write_text("".join(r.to_line() for r in first))
    ledger_file(layout, gone, 2).write_text("".join(r.to_line() for r in again))
    refresh(layout)

    book = load_pricebook(layout.pricebook)
    usage: dict[tuple[str, str], dict[str, LedgerRow]] = {}
    for r in read_rows(layout.ledger_dir):
        if r.episode and r.status == "generated" and r.width and r.height:
            usage.setdefault((r.series, r.provider), {})[r.request_key] = r
    want = sorted((s, p, m["model"], m["season_usd"], m["one_time_usd"], m["references_dropped"], packing)
                  for (s, p), used in usage.items() for packing in ("none", "board")
                  for m in platform_whatif(book, list(used.values()), packing=packing))
    got = sorted(cost_sql(layout, "SELECT series, provider, model, season_usd, one_time_usd, references_dropped, "
                                  "packing FROM _whatif_raw"))
    assert got == want and len(got) > 10


def test_the_benchmarks_synthetic_ledger_is_made_of_valid_rows():
    from bench.cost_tables import ledger_lines

    seen = set()
    for line in ledger_lines(3000):
        r = parse_line(line)
        assert r.to_line() == line  # exactly what the ledger would write
        seen.add(r.status)
    assert seen == {"generated", "cached", "refused", "failed", "unknown", "reconciled"}
