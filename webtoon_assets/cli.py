"""`webtoon` command line: demo (produce the season offline-first) and, later, quotes."""

from __future__ import annotations

import argparse
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
        for strip in sorted(out.glob("*/strip.png")):
            print(f"    strip  {strip}")
    print(f"  image store: {layout.store}")
    print("Open the UI with `make ui` (http://127.0.0.1:3000) to see the runs and materializations.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="webtoon", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="register the episodes and materialize every asset for each")
    demo.add_argument("--series", action="append", help="series id (default: every series)")
    demo.add_argument("--episode", action="append", help="episode id (default: every episode)")
    demo.set_defaults(func=cmd_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
