"""`webtoon`: produce the season (demo), price a request (quote), show the costs (costs)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from webtoon_assets.paths import REPO_ROOT, DataLayout


def cmd_demo(args: argparse.Namespace) -> int:
    os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT))
    from dagster import DagsterInstance

    from webtoon_assets.bible import series_ids
    from webtoon_assets.definitions import defs
    from webtoon_assets.demo import run_season

    layout = DataLayout.default()
    wanted = args.series or series_ids(layout)
    with DagsterInstance.get() as instance:
        for series_id in wanted:
            run_season(instance, defs, layout, series_id, args.episode or None)
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
    print(f"  cost tables: {layout.duckdb_path}  (query with: .venv/bin/duckdb {layout.duckdb_path})")
    print("\nCosts:")
    cmd_costs(argparse.Namespace(series=wanted))
    print("\nOpen the UI with `make ui` (http://127.0.0.1:3000) to see the runs and materializations.")
    return 0


def cmd_costs(args: argparse.Namespace) -> int:
    from webtoon_assets.bible import series_ids
    from webtoon_assets.costs import refresh_cost_tables
    from webtoon_assets.costs.summary import season_summary

    layout = DataLayout.default()
    db = refresh_cost_tables(layout)
    if db is None:
        return 1
    for series_id in args.series or series_ids(layout):
        print(season_summary(db, series_id))
    return 0


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
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
