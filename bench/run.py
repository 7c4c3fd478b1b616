"""``make bench``: every row of issue 11, each measured against its baseline in the same run, on this
machine. Prints the table and writes bench/results.json (git-ignored; the README has the last table).

    python -m bench.run [--only cost_tables strip panels launch season] [--quick]

``--quick`` runs small sizes (a smoke test of the bench itself, not a measurement).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from bench import cost_tables, launch, panels, season, strip
from bench.common import REPO, Row, table, write_results

FULL = {"cost_tables": lambda base: cost_tables.measure(base),
        "strip": lambda base: strip.measure(base),
        "panels": lambda base: panels.measure(base),
        "launch": lambda base: launch.measure(base),
        "season": lambda base: season.measure(base)}
QUICK = {"cost_tables": lambda base: cost_tables.measure(base, rows=20_000),
         "strip": lambda base: strip.measure(base, panels=12, repeat=1),
         "panels": lambda base: panels.measure(base, latency=0.5, concurrency=(8,), panels=16),
         "launch": lambda base: launch.measure(base, panels=6),
         "season": lambda base: season.measure(base, episodes=2, panels=8)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=list(FULL), default=list(FULL))
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    plan = QUICK if a.quick else FULL
    rows: list[Row] = []
    started = time.perf_counter()
    for name in a.only:
        base = Path(tempfile.mkdtemp(prefix=f"webtoon-bench-{name}-"))
        try:
            print(f"== {name}", flush=True)
            got = plan[name](base)
            print(table(got), flush=True)
            rows += got
        finally:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\nAll rows ({time.perf_counter() - started:.0f} s):\n{table(rows)}")
    out = REPO / "bench" / "results.json"
    write_results(rows, out, when=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  machine={"cpus": os.cpu_count(), "python": platform.python_version()}, quick=a.quick)
    missed = [r.what for r in rows if not r.met]
    print(f"wrote {out}" + (f"; goals missed: {'; '.join(missed)}" if missed else "; every goal met"))


if __name__ == "__main__":
    main()
