"""Benchmark: the DuckDB cost tables built from a large ledger (issue 11, "cost tables at 1,000,160
ledger rows").

A synthetic ledger of N valid, checksummed rows (a realistic mix of series, episodes, assets,
endpoints, statuses and reference inputs; ~600 bytes a line; a few files, one per "process") is
written beside a copy of the bible and the price book. In the same run, each in its own process:

1. the whole build (no cost file yet):
   - baseline: DuckDB alone reading the same files, ``SELECT count(*) FROM read_json(...)``;
   - measured: ``refresh_cost_tables(DataLayout(root))``, data/webtoon.duckdb built whole.
2. the refresh after a run: a run adds RUN_ROWS rows in a new file (its process's) and as many
   appended to an existing file (a process that goes on writing), then
   - baseline: the same DuckDB count over the same files, now holding those rows too;
   - measured: ``refresh_cost_tables``, which brings the file of step 1 up to date (incremental).

Goal for each: measured <= 3x its baseline, and the measured process's peak RSS <= 1 GB. Two more
references, each DuckDB alone in its own process, say where the whole build's time goes (in
``extra``): building the same table from the same files with no check at all (typed read_json,
sorted by time, written to a file, same memory cap), and the sha256 of every line (what verifying
the rows' checksums costs in SQL).
Usage: python -m bench.cost_tables [--rows N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from bench.common import REPO, Row, python_measured, table

SERIES = ["lantern_street", "lantern_street", "lantern_street", "harbor_nights", "glass_garden"]
PROVIDERS = ["local", "fal", "fal"]
ASSETS = [("panels", False), ("panels", False), ("panels", False), ("panels", False), ("backgrounds", True),
          ("character_sheets", True), ("style_sheet", True), ("model_trial", False)]
ENDPOINTS = {False: ["fal-ai/flux-2/flash", "fal-ai/flux-2/turbo", "fal-ai/flux-2"],
             True: ["fal-ai/flux-2/flash/edit", "fal-ai/flux-2/turbo/edit", "fal-ai/flux-2-pro/edit"]}
# status, its share of rows (out of 100)
STATUSES = [("generated", 55), ("cached", 35), ("refused", 3), ("failed", 5), ("unknown", 1), ("reconciled", 1)]
SIZES = [(768, 1024), (1024, 1024), (1024, 768), (1024, 1536)]
INPUTS = ["[]", "[[1024,1024]]", "[[768,1024],[1024,1024]]", "[[1024,1024],[768,1024],[1024,768]]",
          "[[1024,1024],[1024,1024],[768,1024],[1024,768],[1024,1536]]"]
# as the ledger writes them (str of a Decimal): the last two are the tiny amounts that must stay exact
PRICES = [(str(Decimal(p)), str(Decimal(p) * 120)) for p in ("0.005", "0.008", "0.012", "0.03", "0.045", "0.0125",
                                                             "0.00000001", "0.000000015")]
ERRORS = ["HTTP 500 from provider: internal error while generating, retried 3 times then gave up",
          "budget: the episode cap of $0.50 would be exceeded by this plan (needs $0.64, $0.12 left)"]
FILES = 6
RUN_ROWS = 68  # a run of the sample season's size: 68 attempts


def _status_table() -> list[str]:
    out = []
    for status, share in STATUSES:
        out += [status] * share
    return out


def ledger_lines(n: int, seed: int = 0):
    """``n`` valid ledger lines (with their trailing newline), made from templates: fast, and each
    one exactly what ``LedgerRow.to_line`` would write (tested: bench_tests / test_costs)."""
    statuses = _status_table()
    sha = hashlib.sha256
    run_ids = [sha(f"run{seed}-{i}".encode()).hexdigest()[:8] + "-79a6-484f-ba9e-" +
               sha(f"r{i}".encode()).hexdigest()[:12] for i in range(64)]
    base = 1795849422  # 2026-11-28T05:43:42Z
    for i in range(n):
        h = sha(f"{seed}:{i}".encode()).hexdigest()
        k = int(h[:12], 16)
        series = SERIES[k % len(SERIES)]
        provider = PROVIDERS[(k >> 3) % len(PROVIDERS)]
        asset, reusable = ASSETS[(k >> 5) % len(ASSETS)]
        status = statuses[(k >> 8) % 100]
        inputs = INPUTS[(k >> 15) % len(INPUTS)] if not reusable or (k >> 15) % 2 else "[]"
        edit = inputs != "[]"
        endpoint = ENDPOINTS[edit][(k >> 18) % 3]
        w, h_ = SIZES[(k >> 20) % len(SIZES)]
        episode = "" if asset == "model_trial" else f"ep{(k >> 23) % 40 + 1:02d}"
        price, credits = PRICES[(k >> 28) % len(PRICES)]
        # a request made twice (a cache hit, a re-made image) shares its key: keys repeat
        key = sha(f"{series}/{asset}/{(k >> 30) % 200_000}/{w}x{h_}/{inputs}".encode()).hexdigest()
        billed = "0" if provider == "local" or status in ("cached", "refused") else price
        if status == "reconciled":
            billed = "-" + price
        if i % 3 == 0:  # three rows a second
            second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + i // 3))
        stamp = f"{second}.{(i * 7919) % 999_999 + 1:06d}Z"
        parts = [f'{{"id":"{h[:32]}","time":"{stamp}","run_id":"{run_ids[k % 64]}","series":"{series}",'
                 f'"episode":"{episode}","asset":"{asset}","item":"p{(k >> 40) % 90:02d}",'
                 f'"reusable":{"true" if reusable else "false"},"provider":"{provider}","endpoint":"{endpoint}",'
                 f'"request_key":"{key}","status":"{status}","billed_usd":"{billed}","list_usd":"{price}",'
                 f'"credits":"{credits}","units":"1","unit":"megapixel","megapixels":"{1 + (k >> 33) % 3}",'
                 f'"images":1']
        if status in ("generated", "cached"):
            parts.append(f',"width":{w},"height":{h_}')
        parts.append(f',"inputs":{inputs}')
        if provider == "fal" and status in ("generated", "unknown", "failed"):
            parts.append(f',"provider_request_id":"{h[32:40]}-{h[40:44]}-{h[44:48]}-{h[48:52]}-{h[52:64]}"')
        if status == "reconciled":
            parts.append(f',"settles":"{sha(f"{seed}:{i - 1}".encode()).hexdigest()[:32]}"')
        if status in ("failed", "refused"):
            parts.append(f',"error":"{ERRORS[k % 2]}"')
        if status == "cached" and k % 7 == 0:
            parts.append(',"note":"record rebuilt from the image and the ledger"')
        body = "".join(parts) + "}"
        yield f'{body[:-1]},"sum":"{sha(body.encode()).hexdigest()[:16]}"}}\n'


def write_ledger(folder: Path, rows: int, files: int = FILES) -> int:
    """``rows`` lines over ``files`` files named like a writer's (a gone process on another host);
    returns the bytes written."""
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-rows // files)
    written = 0
    lines = ledger_lines(rows)
    for f in range(files):
        n = min(per, rows - f * per)
        if n <= 0:
            break
        chunk = []
        with open(folder / f"20261128T0543{f:02d}-benchhost-{4000 + f}-1.jsonl", "w", encoding="utf-8") as out:
            for _ in range(n):
                chunk.append(next(lines))
                if len(chunk) == 10_000:
                    written += out.write("".join(chunk))
                    chunk.clear()
            written += out.write("".join(chunk))
    return written


def fresh_root(base: Path, rows: int) -> tuple[Path, int]:
    root = base / "data"
    shutil.copytree(REPO / "data" / "series", root / "series")
    shutil.copy(REPO / "data" / "pricebook.yaml", root / "pricebook.yaml")
    size = write_ledger(root / "ledger", rows)
    return root, size


def _warm(ledger: Path) -> None:
    """Read the ledger once so every measurement starts from it in the page cache (this machine
    reclaims cold pages within seconds; a read from disk would time the disk)."""
    for path in sorted(ledger.glob("*.jsonl")):
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def _child(args: list[str], ledger: Path):
    _warm(ledger)
    return python_measured(["-m", "bench.cost_tables", *args])


def run_adds(ledger: Path, n: int = RUN_ROWS) -> int:
    """What a run adds: ``n`` rows appended to the last file and ``n`` in a new one; the bytes added."""
    lines = list(ledger_lines(2 * n, seed=1))  # other ids than the ledger's (seed 0)
    with open(sorted(ledger.glob("*.jsonl"))[-1], "a", encoding="utf-8") as out:
        added = out.write("".join(lines[:n]))
    with open(ledger / "20261128T060000-benchhost-4100-1.jsonl", "w", encoding="utf-8") as out:
        added += out.write("".join(lines[n:]))
    return added


def _counted(m, expected: int, what: str) -> None:
    got = int(m.stdout.split()[-1])
    if got != expected:
        raise RuntimeError(f"{what}: {got} rows, expected {expected}: {m.stdout}")


def _count_and_refresh(root: Path, ledger: Path, rows: int, built: str):
    """DuckDB's own count of the ledger (the baseline), then the cost tables' refresh, which must
    hold ``rows`` rows and have been built ``built`` (whole or incremental)."""
    baseline = _child(["--duckdb-count", str(ledger)], ledger)
    _counted(baseline, rows, "DuckDB counted")
    measured = _child(["--refresh", str(root)], ledger)
    _counted(measured, rows, "the cost tables hold")
    if f"built: {built}" not in measured.stdout:
        raise RuntimeError(f"the refresh was not {built}: {measured.stdout}")
    return baseline, measured


def measure(base: Path, rows: int = 1_000_160) -> list[Row]:
    from webtoon_assets.costs.tables import MEMORY_LIMIT

    root, size = fresh_root(base, rows)
    ledger = root / "ledger"
    db = root / "webtoon.duckdb"
    baseline, measured = _count_and_refresh(root, ledger, rows, "whole")
    whole_bytes = db.stat().st_size
    build = _child(["--duckdb-build", str(ledger), "--memory", MEMORY_LIMIT], ledger)
    sha = _child(["--duckdb-sha256", str(ledger)], ledger)
    whole = Row(what=f"cost tables, {rows:,} ledger rows (built whole)",
                baseline=f"DuckDB alone: count(*) of read_json over the same {size / 1e6:.0f} MB",
                baseline_s=round(baseline.seconds, 3), measured_s=round(measured.seconds, 3), goal=3.0,
                limits={"peak_mb": (round(measured.peak_mb, 1), 1024)},
                extra={"baseline_peak_mb": round(baseline.peak_mb, 1),
                       "reference_build_no_checks_s": round(build.seconds, 3),
                       "reference_build_no_checks_peak_mb": round(build.peak_mb, 1),
                       "reference_sha256_every_line_s": round(sha.seconds, 3), "ledger_bytes": size,
                       "ledger_files": len(list(ledger.glob("*.jsonl"))), "rows": rows,
                       "duckdb_bytes": whole_bytes, "log": measured.stdout.strip().splitlines()[:-2]})

    added = run_adds(ledger)
    after = rows + 2 * RUN_ROWS
    baseline, measured = _count_and_refresh(root, ledger, after, "incremental")
    total = size + added
    run = Row(what=f"cost tables refresh after a run (+{RUN_ROWS} rows in a new file and +{RUN_ROWS} rows appended "
                   f"to an existing one) on a {rows:,}-row ledger",
              baseline=f"DuckDB alone: count(*) of read_json over the same {total / 1e6:.0f} MB",
              baseline_s=round(baseline.seconds, 3), measured_s=round(measured.seconds, 3), goal=3.0,
              limits={"peak_mb": (round(measured.peak_mb, 1), 1024)},
              extra={"baseline_peak_mb": round(baseline.peak_mb, 1), "rows": after, "bytes_added": added,
                     "ledger_files": len(list(ledger.glob("*.jsonl"))),
                     "duckdb_bytes_before": whole_bytes, "duckdb_bytes": db.stat().st_size,
                     "log": measured.stdout.strip().splitlines()[:-2]})
    return [whole, run]


# The generations table's inputs as DuckDB types, for the no-check reference.
_COLUMNS = {"id": "VARCHAR", "time": "TIMESTAMPTZ", "run_id": "VARCHAR", "series": "VARCHAR", "episode": "VARCHAR",
            "asset": "VARCHAR", "item": "VARCHAR", "reusable": "BOOLEAN", "provider": "VARCHAR",
            "endpoint": "VARCHAR", "request_key": "VARCHAR", "status": "VARCHAR", "billed_usd": "DECIMAL(18,8)",
            "list_usd": "DECIMAL(18,8)", "credits": "DECIMAL(18,6)", "units": "DECIMAL(18,6)", "unit": "VARCHAR",
            "megapixels": "DECIMAL(18,6)", "images": "INTEGER", "seconds": "DECIMAL(18,3)", "width": "INTEGER",
            "height": "INTEGER", "inputs": "JSON", "provider_request_id": "VARCHAR", "settles": "VARCHAR",
            "error": "VARCHAR", "note": "VARCHAR"}


def _duckdb_build(ledger: Path, memory_limit: str) -> None:
    import duckdb

    db = ledger.parent / "reference.duckdb"
    db.unlink(missing_ok=True)
    con = duckdb.connect(str(db))
    con.execute(f"SET memory_limit = '{memory_limit}'")
    columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in _COLUMNS.items()) + "}"
    con.execute(f"CREATE TABLE generations AS SELECT * FROM read_json('{ledger}/*.jsonl', "
                f"format='newline_delimited', columns={columns}) ORDER BY time")
    print(con.execute("SELECT count(*) FROM generations").fetchone()[0])
    con.close()
    db.unlink()


def _duckdb_sha256(ledger: Path) -> None:
    import duckdb

    con = duckdb.connect()
    print(con.execute(f"SELECT count(*) FILTER (WHERE sha256(line) <> '') FROM read_csv('{ledger}/*.jsonl', "
                      "columns={'line': 'VARCHAR'}, header=false, delim=chr(1), quote='', escape='', "
                      "auto_detect=false)").fetchone()[0])


# (No query here takes parameters: the DuckDB client would import pandas for the first one.)
def _duckdb_count(ledger: Path) -> None:
    import duckdb

    con = duckdb.connect()
    n = con.execute(f"SELECT count(*) FROM read_json('{ledger}/*.jsonl', format='newline_delimited')").fetchone()[0]
    print(n)


def _refresh(root: Path) -> None:
    import duckdb

    from webtoon_assets.costs import refresh_cost_tables, tables
    from webtoon_assets.paths import DataLayout

    built = ["whole"]  # incremental when the refresh finds an earlier file to bring up to date
    old_state = tables._old_state

    def spy(con, layout):
        state = old_state(con, layout)
        built[:] = ["whole" if state is None else "incremental"]
        return state

    tables._old_state = spy
    notes: list[str] = []
    db = refresh_cost_tables(DataLayout(root), log=notes.append)
    for note in notes:
        print(note)
        if note.startswith("cost tables: built whole"):  # the incremental path failed
            built[:] = ["whole"]
    if db is None:
        raise SystemExit("the cost tables were not refreshed")
    con = duckdb.connect(str(db), read_only=True)
    print(f"built: {built[0]}")
    print(con.execute("SELECT count(*) FROM generations").fetchone()[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_160)
    p.add_argument("--keep", type=Path, help="make the data root here and leave it (default: a temp dir)")
    p.add_argument("--duckdb-count", type=Path, help=argparse.SUPPRESS)  # the baseline's child process
    p.add_argument("--refresh", type=Path, help=argparse.SUPPRESS)  # the measured child process
    p.add_argument("--duckdb-build", type=Path, help=argparse.SUPPRESS)  # the references' child processes
    p.add_argument("--duckdb-sha256", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--memory", default="400MB", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.duckdb_count:
        return _duckdb_count(a.duckdb_count)
    if a.duckdb_build:
        return _duckdb_build(a.duckdb_build, a.memory)
    if a.duckdb_sha256:
        return _duckdb_sha256(a.duckdb_sha256)
    if a.refresh:
        return _refresh(a.refresh)
    base = a.keep or Path(tempfile.mkdtemp(prefix="webtoon-bench-costs-"))
    try:
        rows = measure(base, a.rows)
    finally:
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(table(rows))
    for r in rows:
        print(r.extra)


if __name__ == "__main__":
    sys.exit(main())
