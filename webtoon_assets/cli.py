"""`webtoon`: check the whole bible (validate), produce the season (demo), price a request or what an
episode would cost now (quote), show the costs (costs), settle unknown outcomes and compare the ledger
with the platforms (reconcile), check the ledger (ledger verify), check the price book against fal's
price list (prices refresh).

- ``webtoon validate [--series S ...]``: series.yaml against the price book and every episode script,
  every problem of every file listed (file, line, field); exit 2 if any, else a short summary.
- ``webtoon quote ENDPOINT --request JSON [--response JSON]``: one request's list price, as JSON.
- ``webtoon quote --episode E [--series S] [--json]``: what making episode E would cost now, per asset
  family: only what the image store does not already hold is counted. No Dagster, and nothing is
  reserved or written: a quote has no effect on the budgets or the ledger.
- ``webtoon reconcile [--since DAY] [--tolerance USD] [--tolerance-percent P]``: settle unknown outcomes,
  then compare the ledger with what fal (billable units, usage per hour) and BFL (cost per response)
  report; the differences are printed, appended to data/reconciliation.jsonl (the ``reconciliation``
  table); exit 3 on drift.
- ``webtoon prices refresh [--write] [--all]``: the price book's fal entries against fal's pricing API;
  ``--write`` writes changed prices (never a unit change) in place.

A user's mistake (unknown series, a bad file, a bad flag) exits 2 with a message on stderr, never a
traceback."""

from __future__ import annotations

import argparse
import json
import os
import sys
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from webtoon_assets.bible.errors import BibleError
from webtoon_assets.memory import limit_malloc_arenas
from webtoon_assets.paths import REPO_ROOT, DataLayout

if TYPE_CHECKING:
    from webtoon_assets.bible import Episode, ProseScript, Series
    from webtoon_assets.gateway import Gateway
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


def cmd_validate(args: argparse.Namespace) -> int:
    """The whole bible of every series (or those named): series.yaml against the price book, then
    every episode script. Every problem of every file is listed, not just the first; exit 2 if any."""
    from webtoon_assets.bible import series_ids
    from webtoon_assets.pricing import load_pricebook

    layout = DataLayout.default()
    errors: list[BibleError] = []
    book: PriceBook | None = None
    try:
        book = load_pricebook(layout.pricebook)
    except BibleError as e:  # the bible is still checked, all but its models against the book
        errors.append(e)
    except OSError as e:
        errors.append(BibleError(layout.pricebook, [f"cannot read the price book: {e.strerror or e}"]))
    known = series_ids(layout)
    wanted = list(dict.fromkeys(args.series or known))
    if not wanted:
        errors.append(BibleError(layout.series_root, ["no series here: expected <series id>/series.yaml"]))
    totals = [0, 0]  # episodes, panels
    for series_id in wanted:
        print(_validate_series(layout, series_id, book, known, errors, totals))
    if errors:
        for e in errors:
            print(f"webtoon validate: {e}", file=sys.stderr)
        problems = sum(len(e.problems) for e in errors)
        print(f"webtoon validate: {problems} problem(s) in {len(errors)} file(s)", file=sys.stderr)
        return 2
    print(f"OK: {len(wanted)} series, {totals[0]} episode(s), {totals[1]} panel(s) from scripts"
          + ("" if book is None else f"; models checked against {layout.pricebook}"))
    return 0


def _validate_series(layout: DataLayout, series_id: str, book: PriceBook | None, known: list[str],
                     errors: list[BibleError], totals: list[int]) -> str:
    """Check one series, adding a BibleError per bad file to ``errors``; its one-line summary."""
    from webtoon_assets.bible import ProseScript, episode_ids, load_episode, load_series
    from webtoon_assets.bible.models import SLUG_RE

    if series_id not in known and not (SLUG_RE.match(series_id) and (layout.series_root / series_id).is_dir()):
        errors.append(BibleError(layout.series_root / series_id,
                                 [f"unknown series {series_id!r}; expected one of {known}"]))
        return f"{series_id}: unknown series"
    bad = len(errors)
    series = None
    try:
        series = load_series(layout, series_id, book=book)
    except BibleError as e:
        errors.append(e)
        if book is not None:  # only the models failed the price book: the scripts can still be checked
            try:
                series = load_series(layout, series_id)
            except BibleError:
                pass
    except OSError as e:
        errors.append(BibleError(layout.series_root / series_id / "series.yaml", [f"cannot read: {e.strerror or e}"]))
    if series is None:
        return (f"{series_id}: series.yaml has problems; its episode scripts are checked against it, "
                "so once it loads")
    panels: dict[str, int] = {}
    prose: list[str] = []
    ids = episode_ids(layout, series_id)
    for episode_id in ids:
        try:
            script = load_episode(layout, series, episode_id)
        except BibleError as e:
            errors.append(e)
            continue
        except OSError as e:
            errors.append(BibleError(layout.series_root / series_id / "episodes" / f"{episode_id}.txt",
                                     [f"cannot read: {e.strerror or e}"]))
            continue
        if isinstance(script, ProseScript):
            prose.append(episode_id)
        else:
            panels[episode_id] = len(script.panels)
    folder = layout.series_root / series_id / "episodes"
    for path in sorted(folder.glob("*.txt")) if folder.is_dir() else []:
        if not SLUG_RE.match(path.stem):  # never read by demo either: say so rather than skip it silently
            print(f"webtoon validate: note: {path} is skipped: {path.stem!r} is not an episode id "
                  "(lowercase letters, digits, '_' or '-')", file=sys.stderr)
    totals[0] += len(ids)
    totals[1] += sum(panels.values())
    status = "OK" if len(errors) == bad else f"{len(errors) - bad} file(s) with problems"
    parts = [f"{series_id}: {status}: {len(ids)} episode(s)"]
    if panels:
        parts.append(f"{sum(panels.values())} panel(s) ({', '.join(f'{e} {n}' for e, n in panels.items())})")
    if prose:
        parts.append(f"prose: {', '.join(prose)} (panels made by the storyboard step)")
    return ", ".join(parts)


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
    from webtoon_assets.gateway.coordination import open_coordination
    from webtoon_assets.ledger import LedgerProblem, verify

    layout = DataLayout.default()
    try:
        coordination = open_coordination(layout)
    except ValueError as e:  # a database URL that is not one
        print(f"webtoon ledger verify: {e}", file=sys.stderr)
        return 2
    try:
        if coordination.kind == "files":
            folder: Any = layout.ledger_dir
            rows, damaged, torn = verify(folder)
        else:  # the database's table: every line's checksum, in id order
            folder, damaged, torn = coordination.where, [], []
            problems: list[LedgerProblem] = damaged
            rows = sum(1 for _ in coordination.ledger.rows(problems))
    finally:
        coordination.close()
    print(f"{folder}: {rows} whole row(s), {len(damaged)} damaged")
    for problem in damaged:
        print(f"  {problem}")
    for path in torn:
        print(f"  {path}: partial last line(s) cut off a killed writer's file and kept here (no whole row lost)")
    return 1 if damaged else 0


RECONCILE_DRIFT = 3  # exit code: a difference beyond the tolerance (a cron job notices)


def _since_arg(text: str) -> Any:
    """--since: an ISO day or time (UTC unless it names its zone)."""
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO day or time (2026-11-20, 2026-11-20T08:00), got {text!r}"
                                         ) from None


def _dollars_arg(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except ArithmeticError:
        value = Decimal(-1)
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"expected dollars, 0 or more (e.g. 0.01), got {text!r}")
    return value


def _percent_arg(text: str) -> Decimal:
    value = _dollars_arg(text.rstrip("%"))
    if value > 100:
        raise argparse.ArgumentTypeError(f"expected a percentage from 0 to 100, got {text!r}")
    return value


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Settle unknown outcomes (as ever), then compare the ledger with what the platforms report
    (fal's billable units per result, fal's usage per endpoint and hour, BFL's cost per response),
    print the differences, append them to the reconciliation file and refresh the cost tables.
    Exit 3 when any difference is drift (beyond the tolerance); else 1 when unknown outcomes stay
    open or a platform could not be asked; else 0."""
    import datetime as dt

    from webtoon_assets.gateway.coordination import open_coordination
    from webtoon_assets.gateway.providers.fal_platform import FalPlatform
    from webtoon_assets.ledger.reconcile import LOOKBACK

    layout = DataLayout.default()
    now = dt.datetime.now(dt.timezone.utc)
    since = args.since or now - LOOKBACK
    if since.tzinfo is None:
        since = since.replace(tzinfo=dt.timezone.utc)
    if since >= now:
        print(f"webtoon reconcile: --since {since.isoformat()} is not in the past", file=sys.stderr)
        return 2
    platform = FalPlatform.from_env()
    try:  # the ledger: files here, or the database (WEBTOON_DATABASE_URL)
        coordination = open_coordination(layout)
    except ValueError as e:
        print(f"webtoon reconcile: {e}", file=sys.stderr)
        return 2
    try:
        return _reconcile(args, layout, coordination, platform, now, since)
    finally:
        coordination.close()


def _reconcile(args: argparse.Namespace, layout: DataLayout, coordination: Any, platform: Any, now: Any,
               since: Any) -> int:
    import uuid

    from webtoon_assets.costs import refresh_cost_tables
    from webtoon_assets.ledger.reconcile import (DRIFT_TOLERANCE_SHARE, DRIFT_TOLERANCE_USD, Tolerance,
                                                 compare_with_platforms, format_comparison, reconcile,
                                                 record_differences, write_settlements)
    from webtoon_assets.pricing import load_pricebook

    report = reconcile(coordination.ledger.rows(), platform)
    changed = False
    if not report.settled and not report.open:
        print("no unknown outcomes: nothing to reconcile")
    else:
        changed = bool(write_settlements(coordination.ledger, report, run_id="reconcile"))
        for s in report.settled:
            u = s.row
            print(f"settled  {u.series}/{u.episode or '-'} {u.asset} {u.item} on {u.endpoint}: {s.outcome} "
                  f"(correction ${s.correction}): {s.why}")
        for s in report.open:
            u = s.row
            print(f"unknown  {u.series}/{u.episode or '-'} {u.asset} {u.item} on {u.endpoint}: still counted at "
                  f"${u.billed_usd}: {s.why}")
        print(f"{len(report.settled)} settled, {len(report.open)} still unknown (${report.still_held_usd} held)")

    try:  # the rules' unit prices; without a readable book, each row's own list price per unit
        book = load_pricebook(layout.pricebook)
    except (BibleError, OSError) as e:
        print(f"webtoon reconcile: the price book does not load ({e}); units are priced at each row's "
              "list price per unit", file=sys.stderr)
        book = None
    tolerance = Tolerance(DRIFT_TOLERANCE_USD if args.tolerance is None else args.tolerance,
                          DRIFT_TOLERANCE_SHARE if args.tolerance_percent is None else args.tolerance_percent / 100)
    comparison = compare_with_platforms(coordination.ledger.rows(), book, platform, since, now, tolerance)
    print()
    print(format_comparison(comparison))
    run_id = f"reconcile-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    if record_differences(layout.reconciliation_path, comparison, run_id, now):
        changed = True
        print(f"stored as run {run_id} in {layout.reconciliation_path} (the `reconciliation` table of "
              f"{layout.duckdb_path})")
    for problem in comparison.errors:
        print(f"webtoon reconcile: {problem}", file=sys.stderr)
    if changed:
        refresh_cost_tables(layout, log=lambda m: print(m, file=sys.stderr))
    if comparison.drift:
        return RECONCILE_DRIFT
    return 1 if report.open or comparison.errors else 0


def cmd_prices_refresh(args: argparse.Namespace) -> int:
    """The price book's fal entries against fal's pricing API: a diff table; with --write, the
    changed prices written in place (never a unit change). Exit 1 while the book differs from fal
    (a price not written, a unit change), 2 on an error (no key, fal unreachable, the key refused)."""
    from webtoon_assets.pricing.book import pricebook_path
    from webtoon_assets.pricing.refresh import BookEditError, PlatformError, format_refresh, refresh_prices

    path = pricebook_path()
    try:
        result = refresh_prices(path, os.environ.get("FAL_KEY", ""), write=args.write)
    except (PlatformError, BookEditError) as e:
        print(f"webtoon prices refresh: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"webtoon prices refresh: cannot read or write {path}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(format_refresh(result, show_all=args.all))
    return 1 if result.outstanding else 0


def cmd_quote(args: argparse.Namespace) -> int:
    from webtoon_assets.pricing import QuoteError, UnknownEndpoint, quote

    if args.episode:
        return cmd_quote_episode(args)
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


FAMILIES = ("storyboard", "style_sheet", "character_sheets", "prop_sheets", "backgrounds", "panels")


def cmd_quote_episode(args: argparse.Namespace) -> int:
    """What making one episode would cost now: only what the store does not hold, at list price.
    No Dagster, and no effect: nothing reserved against the budgets, nothing written to the ledger."""
    from webtoon_assets.bible import load_episode, load_series, series_ids
    from webtoon_assets.gateway.coordination import open_coordination
    from webtoon_assets.gateway.gateway import Gateway
    from webtoon_assets.gateway.providers import NoProvider, select_provider
    from webtoon_assets.gateway.remote_store import open_store
    from webtoon_assets.pricing import QuoteError, RetiredEndpoint, UnknownEndpoint, load_pricebook

    layout = DataLayout.default()
    series_id = args.series
    if not series_id:
        known = series_ids(layout)
        if len(known) != 1:
            raise BibleError(layout.series_root, [f"{len(known)} series here: name one with --series "
                                                  f"(one of {known})" if known else "no series here: expected "
                                                  "<series id>/series.yaml"])
        series_id = known[0]
    book = load_pricebook(layout.pricebook)
    check_series(layout, series_id, book, [args.episode])
    series = load_series(layout, series_id, book=book)
    script = load_episode(layout, series, args.episode)
    try:  # the provider the demo would use now (WEBTOON_PROVIDER, FAL_KEY): keys depend on it
        provider = select_provider("", None, layout.store)
    except ValueError as e:
        print(f"webtoon quote: {e}", file=sys.stderr)
        return 2
    # As the Dagster gateway resource builds it, but without budgets: a quote reserves nothing and, with
    # no budget to check, Gateway.preflight only reads the store. The ledger opens on a first row: never
    # (nor does a database's connection).
    try:
        store, coordination = open_store(layout), open_coordination(layout)  # WEBTOON_STORE_URL, _DATABASE_URL
    except ValueError as e:
        print(f"webtoon quote: {e}", file=sys.stderr)
        return 2
    gw = Gateway(store=store, provider=provider, ledger=coordination.ledger,
                 pricebook=book, budget=None, run_id="quote", locks=coordination.lock,
                 submissions=coordination.submissions)
    try:
        plan = episode_quote(gw, layout, series, script)
    except (UnknownEndpoint, QuoteError, RetiredEndpoint, NoProvider) as e:
        print(f"webtoon quote: {e}", file=sys.stderr)
        return 2
    finally:
        gw.providers.close()
        coordination.close()
    print(json.dumps(plan, indent=2, default=str) if args.json else format_episode_quote(plan))
    return 0


def episode_quote(gw: Gateway, layout: DataLayout, series: Series, script: Episode | ProseScript) -> dict[str, Any]:
    """The episode's requests as the storyboard step's pre-flight quote sees them (episode_requests),
    each a hit (in the store: made) or a miss (to make, at its list price), summed per asset family.

    A prose episode's panels come from the text model: from its answer if the store holds it; offline,
    from the splitter (deterministic and free, so known now); else from the last storyboard.json made,
    if any; else they are unknown and only the text request and the style sheet are quoted."""
    from webtoon_assets.bible import ProseScript
    from webtoon_assets.gateway.providers.local import LocalProvider
    from webtoon_assets.manifests import Storyboard
    from webtoon_assets.recipes import episode_requests, style_request
    from webtoon_assets.storyboard import plan_storyboard
    from webtoon_assets.storyboard.prose import episode_from_output, prose_request

    families: dict[str, dict[str, Any]] = {}

    def count(asset: str, endpoint: str, usd: Decimal | None) -> None:  # usd None: in the store
        f = families.setdefault(asset, {"family": asset, "endpoints": [], "to_make": 0, "made": 0,
                                        "usd": Decimal(0)})
        if endpoint not in f["endpoints"]:
            f["endpoints"].append(endpoint)
        if usd is None:
            f["made"] += 1
        else:
            f["to_make"] += 1
            f["usd"] += usd

    notes: list[str] = []
    episode, board, source = None, None, "the script"
    if isinstance(script, ProseScript):
        request = prose_request(series, script)
        fitted, provider = gw.route(request)
        try:
            stored = gw.store.get_text(fitted.key(provider.name))
        except (ValueError, OSError) as e:  # the storyboard step would stop on it too
            raise BibleError(gw.store.text_path(fitted.key(provider.name)),
                             [f"the stored answer of the text model is unreadable ({type(e).__name__}: {e})"]) from None
        answer = None
        if stored is not None:
            answer, source = stored["text"], "the text model's stored answer"
            count("storyboard", request.endpoint, None)
        else:
            response = None
            if isinstance(provider, LocalProvider):  # the offline splitter: deterministic, free, writes nothing
                out = provider.generate_text(fitted)
                answer, response, source = out.text, out.response, "the offline splitter's answer"
            count("storyboard", request.endpoint, gw.quote(request, response).usd)
            if response is None:
                notes.append("storyboard: the text request is priced on its input tokens (estimated at 4 "
                             "characters each); the answer's output tokens are billed on top")
        if answer is not None:
            try:
                episode, _ = episode_from_output(answer, series, script, f"{request.endpoint} via {provider.name}")
            except BibleError as e:
                raise BibleError(e.path, [*e.problems, f"the storyboard step refuses this answer: add or raise "
                                                       f"'Take: N' in the header of {script.path} to ask again"]
                                 ) from None
        elif (made := layout.output_dir(series.id, script.id) / "storyboard.json").is_file():
            try:
                board = Storyboard.model_validate_json(made.read_text(encoding="utf-8"))
                source = f"the last storyboard made ({made})"
                notes.append(f"panels: from {made}; the text model is asked again (the prose, its take or the "
                             "provider changed since), so the panels may differ")
            except (ValueError, OSError) as e:
                notes.append(f"panels: {made} is unreadable ({type(e).__name__}); not used")
        if episode is None and board is None:
            notes.append("panels: unknown until the storyboard is made from the prose (by the text model), so "
                         "only the text request and the style sheet are quoted here; the character and prop "
                         "sheets, backgrounds and panels depend on its answer")
    else:
        episode = script
    if episode is not None:
        board = Storyboard(series=series.id, episode=script.id, title=script.title,
                           panels=plan_storyboard(series, episode))
    requests = (episode_requests(gw, series, script.id, board) if board is not None
                else [style_request(series, script.id)])
    plan = gw.preflight(requests, series.id, script.id, f"episode {script.id}")
    missed = {id(r): usd for r, usd in plan.misses}
    for r in requests:
        count(r.attribution.asset, r.endpoint, missed.get(id(r)))
    rows = sorted(families.values(), key=lambda f: (FAMILIES.index(f["family"]) if f["family"] in FAMILIES
                                                    else len(FAMILIES), f["family"]))
    if gw.providers.names == "local":
        notes.append("provider local: offline, nothing is billed; quoted at the list prices of the models "
                     "it stands in for (the price book)")
    return {
        "series": series.id, "episode": script.id, "title": script.title, "provider": gw.providers.names,
        "panels": len(board.panels) if board is not None else None,
        "panels_from": source if board is not None else None,
        "complete": board is not None, "families": rows,
        "total": {"to_make": sum(f["to_make"] for f in rows), "made": sum(f["made"] for f in rows),
                  "usd": sum((f["usd"] for f in rows), Decimal(0))},
        "per_episode_budget_usd": series.budget.per_episode_usd, "notes": notes,
    }


def _usd(value: Decimal) -> str:
    """Dollars to the tenth of a cent, or exact when finer (a few tokens cost less)."""
    short = f"{value:.3f}"
    return f"${short}" if Decimal(short) == value else f"${value.normalize():f}"


def format_episode_quote(plan: dict[str, Any]) -> str:
    panels = (f"{plan['panels']} panels from {plan['panels_from']}" if plan["complete"]
              else "panels not known yet (see below)")
    lines = [f"{plan['series']} / {plan['episode']} \"{plan['title']}\": {panels}",
             f"quote for provider {plan['provider']}, now: only what the image store does not hold is counted", ""]
    table = [("family", "endpoint", "to make", "made", "list USD")]
    table += [(f["family"], ", ".join(f["endpoints"]), str(f["to_make"]), str(f["made"]), _usd(f["usd"]))
              for f in plan["families"]]
    t = plan["total"]
    table.append(("total" if plan["complete"] else "total so far", "", str(t["to_make"]), str(t["made"]),
                  _usd(t["usd"])))
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for n, row in enumerate(table):
        if n == len(table) - 1:
            lines.append("-" * (sum(widths) + 8))
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    lines.append("")
    lines.append(f"per-episode budget: ${Decimal(plan['per_episode_budget_usd']):.2f} (series.yaml; what the "
                 "episode already spent counts against it too)")
    lines.append("a quote reserves nothing against the budgets and writes nothing to the ledger")
    lines += [f"note: {n}" for n in plan["notes"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    limit_malloc_arenas()  # before any thread: the demo's threads share two arenas (see memory.py)
    parser = argparse.ArgumentParser(prog="webtoon", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="register the episodes, materialize every asset for each, print the costs")
    demo.add_argument("--series", action="append", help="series id (default: every series)")
    demo.add_argument("--episode", action="append", help="episode id (default: every episode)")
    demo.set_defaults(func=cmd_demo)
    costs = sub.add_parser("costs", help="refresh data/webtoon.duckdb and print each season's cost summary")
    costs.add_argument("--series", action="append", help="series id (default: every series)")
    costs.set_defaults(func=cmd_costs)
    q = sub.add_parser("quote", help="price one request from the price book, as JSON; or, with --episode, "
                                     "what making an episode would cost now (only what is not yet made)",
                       usage="%(prog)s ENDPOINT --request JSON [--response JSON]\n"
                             "       %(prog)s --episode EPISODE [--series SERIES] [--json]")
    q.add_argument("endpoint", nargs="?", help="endpoint id, e.g. fal-ai/flux-2/flash/edit")
    q.add_argument("--request", help='request arguments as JSON, e.g. \'{"image_size": "square_hd"}\'')
    q.add_argument("--response", help="the response as JSON, when the price depends on it")
    q.add_argument("--episode", help="quote this episode instead: per asset family, what is to make and its list "
                                     "price; nothing reserved or recorded")
    q.add_argument("--series", help="with --episode: series id (default: the only series)")
    q.add_argument("--json", action="store_true", help="with --episode: the quote as JSON")
    q.set_defaults(func=cmd_quote)
    val = sub.add_parser("validate", help="check series.yaml against the price book and every episode script; "
                                          "list every problem, exit 2 if any")
    val.add_argument("--series", action="append", help="series id (default: every series)")
    val.set_defaults(func=cmd_validate)
    rec = sub.add_parser("reconcile", help="settle paid calls of unknown outcome against what fal reports "
                                           "(FAL_KEY; FAL_ADMIN_KEY for its usage report), then compare the "
                                           "ledger with what fal and BFL report; exit 3 on drift")
    rec.add_argument("--since", type=_since_arg, help="compare from this day or time (ISO, UTC unless it says; "
                                                  "default: a week ago)")
    rec.add_argument("--tolerance", type=_dollars_arg, default=None, metavar="USD",
                     help="drift: a difference above this many dollars... (default 0.01)")
    rec.add_argument("--tolerance-percent", type=_percent_arg, default=None, metavar="PCT",
                     help="... or above this percentage of the platform's figure, whichever is larger (default 1)")
    rec.set_defaults(func=cmd_reconcile)
    prices = sub.add_parser("prices", help="the price book against the platforms' own price lists")
    prices_sub = prices.add_subparsers(dest="prices_command", required=True)
    refresh = prices_sub.add_parser("refresh", help="compare every fal entry of the price book with fal's pricing "
                                                    "API (FAL_KEY); --write writes changed prices")
    refresh.add_argument("--write", action="store_true", help="write the changed prices (with read: today and "
                                                              "source: the pricing API) into the book; never a "
                                                              "unit change")
    refresh.add_argument("--all", action="store_true", help="list the unchanged endpoints too")
    refresh.set_defaults(func=cmd_prices_refresh)
    ledger = sub.add_parser("ledger", help="the spend ledger")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    ledger_sub.add_parser("verify", help="list damaged ledger rows by file and line; exit 1 if any").set_defaults(
        func=cmd_ledger_verify)
    args = parser.parse_args(argv)  # a bad flag: argparse prints the usage and exits 2
    if args.command == "quote":  # two modes: one request (ENDPOINT --request) or an episode (--episode)
        if args.episode and (args.endpoint or args.request is not None or args.response is not None):
            q.error("--episode quotes a whole episode; ENDPOINT --request prices one request: give one or the other")
        if not args.episode and (args.series or args.json):
            q.error("--series and --json go with --episode")
        if not args.episode and (not args.endpoint or args.request is None):
            q.error("expected ENDPOINT --request JSON (one request) or --episode EPISODE (an episode)")
    try:
        return args.func(args)
    except BibleError as e:  # a user's mistake gets its message, never a traceback
        print(f"webtoon {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
