"""`webtoon`: produce the season (demo), price a request (quote), show the costs (costs), settle unknown
outcomes (reconcile), check the ledger (ledger verify)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

from webtoon_assets.bible.errors import BibleError
from webtoon_assets.paths import REPO_ROOT, DataLayout

if TYPE_CHECKING:
    from webtoon_assets.pricing import PriceBook


def cmd_demo(args: argparse.Namespace) -> int:
    from webtoon_assets.bible import series_ids
    from webtoon_assets.pricing import load_pricebook

    layout = DataLayout.default()
    book = load_pricebook(layout.pricebook)
    wanted, broken = [], []
    for series_id in args.series or series_ids(layout):  # checked before Dagster is even imported
        try:
            check_series(layout, series_id, book, args.episode or [])
            wanted.append(series_id)
        except BibleError as e:  # reported and skipped; the other series are still produced
            print(f"webtoon demo: series {series_id} not produced: {e}", file=sys.stderr)
            broken.append(series_id)
    if wanted:
        from dagster import Failure

        from webtoon_assets.definitions import defs
        from webtoon_assets.demo import run_season
        from webtoon_assets.instance import open_instance

        with open_instance() as instance:  # DAGSTER_HOME, default data/dagster; locked first open
            for series_id in wanted:
                try:
                    run_season(instance, defs, layout, series_id, args.episode or None)
                except (BibleError, Failure) as e:  # Failure: a refused step (a budget), already logged
                    print(f"webtoon demo: series {series_id} stopped: {e}", file=sys.stderr)
                    broken.append(series_id)
    print("\nOutputs:")
    for series_id in wanted:
        out = layout.output_dir(series_id)
        print(f"  {series_id}: {out}")
        if (out / "index.html").is_file():
            print(f"    season reader   file://{out / 'index.html'}")
        for reader in sorted(out.glob("*/reader.html")):
            slices = sorted((reader.parent / "webtoon").glob("*.jpg"))
            size = sum(p.stat().st_size for p in slices) / 1e6
            print(f"    {reader.parent.name}  reader file://{reader}  |  {len(slices)} upload slices "
                  f"({size:.1f} MB) in {reader.parent / 'webtoon'}")
    print(f"  image store: {layout.store}")
    print(f"  cost tables: {layout.duckdb_path}  (query with: .venv/bin/duckdb -readonly {layout.duckdb_path})")
    print("\nCosts:")
    if wanted:
        cmd_costs(argparse.Namespace(series=wanted))
    print("\nOpen the UI with `make ui` (http://127.0.0.1:3000) to see the runs and materializations.")
    return 2 if broken else 0


def check_series(layout: DataLayout, series_id: str, book: PriceBook | None, episodes: list[str]) -> None:
    """An existing series, valid against the price book, with the episodes asked for; else BibleError."""
    from webtoon_assets.bible import episode_ids, load_series, series_ids

    known = series_ids(layout)
    if series_id not in known:
        raise BibleError(layout.series_root / series_id, [f"unknown series {series_id!r}; expected one of {known}"])
    load_series(layout, series_id, book=book)
    have = episode_ids(layout, series_id)
    if missing := [e for e in episodes if e not in have]:
        raise BibleError(layout.series_root / series_id / "episodes",
                         [f"unknown episode {e!r}: no script {e}.txt; expected one of {have}" for e in missing])


def cmd_costs(args: argparse.Namespace) -> int:
    from webtoon_assets.bible import series_ids
    from webtoon_assets.costs import refresh_cost_tables
    from webtoon_assets.costs.summary import money_warnings, season_summary

    layout = DataLayout.default()
    notes: list[str] = []
    db = refresh_cost_tables(layout, log=notes.append)
    for note in notes:  # a broken series and damaged ledger rows are named below, once
        if not note.startswith(("cost tables: skipping series ", "cost tables: damaged ledger row")):
            print(note, file=sys.stderr)
    if db is None:
        return 1
    broken = 0
    for series_id in args.series or series_ids(layout):
        try:
            check_series(layout, series_id, None, [])
        except BibleError as e:  # named, and the other series' costs are still printed
            print(f"webtoon costs: series {series_id} not summarised: {e}", file=sys.stderr)
            broken += 1
            continue
        print(season_summary(db, series_id))
    if warnings := money_warnings(db):
        print(warnings)
    return 2 if broken else 0


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    from webtoon_assets.ledger import verify

    folder = DataLayout.default().ledger_dir
    rows, damaged, torn = verify(folder)
    print(f"{folder}: {rows} whole row(s), {len(damaged)} damaged")
    for problem in damaged:
        print(f"  {problem}")
    for path in torn:
        print(f"  {path}: partial last line(s) cut off a killed writer's file and kept here (no whole row lost)")
    return 1 if damaged else 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from webtoon_assets.costs import refresh_cost_tables
    from webtoon_assets.gateway.providers.fal_platform import FalPlatform
    from webtoon_assets.ledger import Ledger, read_rows
    from webtoon_assets.ledger.reconcile import reconcile, write_settlements

    layout = DataLayout.default()
    report = reconcile(read_rows(layout.ledger_dir), FalPlatform.from_env())
    if not report.settled and not report.open:
        print("no unknown outcomes: nothing to reconcile")
        return 0
    ledger = Ledger(layout.ledger_dir)
    try:
        write_settlements(ledger, report, run_id="reconcile")
    finally:
        ledger.close()
    for s in report.settled:
        u = s.row
        print(f"settled  {u.series}/{u.episode or '-'} {u.asset} {u.item} on {u.endpoint}: {s.outcome} "
              f"(correction ${s.correction}): {s.why}")
    for s in report.open:
        u = s.row
        print(f"unknown  {u.series}/{u.episode or '-'} {u.asset} {u.item} on {u.endpoint}: still counted at "
              f"${u.billed_usd}: {s.why}")
    refresh_cost_tables(layout, log=lambda m: print(m, file=sys.stderr))
    print(f"{len(report.settled)} settled, {len(report.open)} still unknown (${report.still_held_usd} held)")
    return 1 if report.open else 0


def cmd_quote(args: argparse.Namespace) -> int:
    from webtoon_assets.pricing import QuoteError, UnknownEndpoint, quote

    try:
        request = json.loads(args.request)
        response = json.loads(args.response) if args.response else None
    except json.JSONDecodeError as e:
        print(f"webtoon quote: --request/--response: expected JSON ({e})", file=sys.stderr)
        return 2
    try:
        q = quote(args.endpoint, request, response)
    except (UnknownEndpoint, QuoteError) as e:
        print(f"webtoon quote: {e}", file=sys.stderr)
        return 2
    print(json.dumps(q.to_json(), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="webtoon", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="register the episodes, materialize every asset for each, print the costs")
    demo.add_argument("--series", action="append", help="series id (default: every series)")
    demo.add_argument("--episode", action="append", help="episode id (default: every episode)")
    demo.set_defaults(func=cmd_demo)
    costs = sub.add_parser("costs", help="refresh data/webtoon.duckdb and print each season's cost summary")
    costs.add_argument("--series", action="append", help="series id (default: every series)")
    costs.set_defaults(func=cmd_costs)
    q = sub.add_parser("quote", help="price one request from the price book, as JSON")
    q.add_argument("endpoint", help="endpoint id, e.g. fal-ai/flux-2/flash/edit")
    q.add_argument("--request", required=True, help='request arguments as JSON, e.g. \'{"image_size": "square_hd"}\'')
    q.add_argument("--response", help="the response as JSON, when the price depends on it")
    q.set_defaults(func=cmd_quote)
    rec = sub.add_parser("reconcile", help="settle paid calls of unknown outcome against what fal reports "
                                           "(FAL_KEY; FAL_ADMIN_KEY for its usage report)")
    rec.set_defaults(func=cmd_reconcile)
    ledger = sub.add_parser("ledger", help="the spend ledger")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    ledger_sub.add_parser("verify", help="list damaged ledger rows by file and line; exit 1 if any").set_defaults(
        func=cmd_ledger_verify)
    args = parser.parse_args(argv)  # a bad flag: argparse prints the usage and exits 2
    try:
        return args.func(args)
    except BibleError as e:  # a user's mistake gets its message, never a traceback
        print(f"webtoon {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
