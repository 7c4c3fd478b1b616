"""Build data/webtoon.duckdb from the ledger (the truth) and the bible.

The file is rebuilt whole into a temporary file and renamed over the old one. A reader holding
the old file open (the DuckDB CLI, read-only) keeps its snapshot and never blocks a run; two runs
refreshing at once take turns on a lock; neither ever writes the file someone is reading.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Callable

import duckdb
import pandas as pd
from filelock import FileLock

from webtoon_assets.bible import BibleError, ProseScript, episode_ids, load_episode, load_series, series_ids
from webtoon_assets.costs.whatif import platform_whatif
from webtoon_assets.ledger import LedgerProblem, LedgerRow, read_rows
from webtoon_assets.paths import DataLayout
from webtoon_assets.pricing import load_pricebook
from webtoon_assets.files import atomic_path

SQL_VIEWS = Path(__file__).with_name("views.sql")
MONEY = "DECIMAL(18,8)"


def _generations(rows: list[LedgerRow]) -> pd.DataFrame:
    cols = list(LedgerRow.model_fields) + ["counted_usd", "n_inputs"]
    data = []
    for r in rows:
        d = r.model_dump(mode="json")
        d["inputs"] = json.dumps(d["inputs"])
        d["counted_usd"] = str(r.counted_usd)
        d["n_inputs"] = len(r.inputs)
        data.append(d)
    return pd.DataFrame(data, columns=cols).astype(object)


def _bible(layout: DataLayout, log: Callable[[str], None]) -> tuple[pd.DataFrame, pd.DataFrame]:
    series_rows, episode_rows = [], []
    for sid in series_ids(layout):
        try:
            series = load_series(layout, sid)
        except BibleError as e:
            log(f"cost tables: skipping series {sid}: {e}")
            continue
        series_rows.append({"series": sid, "title": series.title, "planned_episodes": series.planned_episodes,
                            "target_per_panel_usd": str(series.budget.target_per_panel_usd),
                            "per_episode_budget_usd": None if series.budget.per_episode_usd is None
                            else str(series.budget.per_episode_usd)})
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
            episode_rows.append({"series": sid, "episode": eid, "title": ep.title, "panels": panels})
    return (pd.DataFrame(series_rows, columns=["series", "title", "planned_episodes", "target_per_panel_usd",
                                               "per_episode_budget_usd"]).astype(object),
            pd.DataFrame(episode_rows, columns=["series", "episode", "title", "panels"]).astype(object))


def _whatif(layout: DataLayout, rows: list[LedgerRow], episodes: pd.DataFrame) -> pd.DataFrame:
    book = load_pricebook(layout.pricebook)
    usage: dict[tuple[str, str], dict[str, LedgerRow]] = {}
    produced: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        if not r.episode:  # the model trial is not the season's usage
            continue
        if r.status == "generated" and r.width and r.height:
            usage.setdefault((r.series, r.provider), {})[r.request_key] = r
        if r.status in ("generated", "cached"):
            produced.setdefault((r.series, r.provider), set()).add(r.episode)
    panels = {(s, e): int(p) for s, e, p in episodes[["series", "episode", "panels"]].itertuples(index=False)}
    out = []
    for (series, provider), used in usage.items():
        eps = produced.get((series, provider), set())
        n_panels = sum(panels.get((series, e), 0) for e in eps)
        for m in platform_whatif(book, list(used.values())):
            out.append({"series": series, "provider": provider, "episodes": len(eps), "panels": n_panels,
                        **{k: str(v) if isinstance(v, Decimal) else v for k, v in m.items()}})
    cols = ["series", "provider", "episodes", "panels", "platform", "model", "endpoints", "max_references",
            "season_usd", "one_time_usd", "references_dropped"]
    return pd.DataFrame(out, columns=cols).astype(object)


def _trials(layout: DataLayout) -> tuple[pd.DataFrame, pd.DataFrame]:
    trials, recs = [], []
    for sid in series_ids(layout):
        folder = layout.output_dir(sid) / "trials"
        for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            data = json.loads(p.read_text())
            if p.name == "recommendation.json":
                recs.append({"series": sid, **data})
            else:
                trials.append(data)
    cols = ["series", "model", "platform", "endpoint", "cost_per_panel_usd", "consistency", "verdict", "scorer",
            "variations", "character", "trial_spent_usd", "trial_quote_usd", "provider"]
    legacy = {"trial_spent_usd": "trial_billed_usd", "trial_quote_usd": "trial_list_usd"}  # trials made before
    return (pd.DataFrame([{c: t.get(c, t.get(legacy.get(c, c))) for c in cols} for t in trials],
                         columns=cols).astype(object),
            pd.DataFrame(recs, columns=["series", "action", "endpoint", "model", "reason"]).astype(object))


def write_cost_tables(path: Path, layout: DataLayout, log: Callable[[str], None] = print) -> None:
    """Write the cost tables and views into a new DuckDB file at ``path``."""
    problems: list[LedgerProblem] = []
    rows = list(read_rows(layout.ledger_dir, problems))
    for p in problems:  # counted out of every sum, but never silently: named here and in ledger_problems
        log(f"cost tables: damaged ledger row, not counted: {p} (see `webtoon ledger verify`)")
    problems_df = pd.DataFrame([{"file": str(p.path), "line": p.line, "reason": p.reason} for p in problems],
                               columns=["file", "line", "reason"]).astype(object)
    series_df, episodes_df = _bible(layout, log)
    gen_df, whatif_df = _generations(rows), _whatif(layout, rows, episodes_df)
    trials_df, rec_df = _trials(layout)
    con = duckdb.connect(str(path))
    try:
        for name, df in {"_problems": problems_df, "_gen": gen_df, "_series": series_df, "_episodes": episodes_df, "_whatif": whatif_df,
                         "_trials_df": trials_df, "_rec_df": rec_df}.items():
            con.register(name, df)
        con.execute(f"""
            CREATE TABLE ledger_problems AS SELECT CAST(file AS VARCHAR) AS file, CAST(line AS INTEGER) AS line,
              CAST(reason AS VARCHAR) AS reason FROM _problems;
            CREATE TABLE generations AS SELECT
              CAST(id AS VARCHAR) AS id, CAST(time AS TIMESTAMPTZ) AS time, CAST(run_id AS VARCHAR) AS run_id,
              CAST(series AS VARCHAR) AS series, CAST(episode AS VARCHAR) AS episode,
              CAST(asset AS VARCHAR) AS asset, CAST(item AS VARCHAR) AS item, CAST(reusable AS BOOLEAN) AS reusable,
              CAST(provider AS VARCHAR) AS provider, CAST(endpoint AS VARCHAR) AS endpoint,
              CAST(request_key AS VARCHAR) AS request_key, CAST(status AS VARCHAR) AS status,
              CAST(billed_usd AS {MONEY}) AS spent_usd,
              CAST(CASE WHEN status = 'generated' THEN CAST(list_usd AS {MONEY}) ELSE 0 END AS {MONEY}) AS quote_usd,
              CAST(CASE WHEN status = 'cached' THEN CAST(list_usd AS {MONEY}) ELSE 0 END AS {MONEY}) AS saved_usd,
              CAST(counted_usd AS {MONEY}) AS counted_usd, CAST(list_usd AS {MONEY}) AS list_usd,
              CAST(credits AS DECIMAL(18,6)) AS credits,
              CAST(units AS DECIMAL(18,6)) AS units, CAST(unit AS VARCHAR) AS unit,
              CAST(megapixels AS DECIMAL(18,6)) AS megapixels, CAST(images AS INTEGER) AS images,
              CAST(seconds AS DECIMAL(18,3)) AS seconds, CAST(width AS INTEGER) AS width,
              CAST(height AS INTEGER) AS height, CAST(n_inputs AS INTEGER) AS n_inputs,
              CAST(inputs AS JSON) AS inputs, CAST(provider_request_id AS VARCHAR) AS provider_request_id,
              CAST(settles AS VARCHAR) AS settles, CAST(error AS VARCHAR) AS error, CAST(note AS VARCHAR) AS note
            FROM _gen ORDER BY time;
            CREATE TABLE series_info AS SELECT CAST(series AS VARCHAR) AS series, CAST(title AS VARCHAR) AS title,
              CAST(planned_episodes AS INTEGER) AS planned_episodes,
              CAST(target_per_panel_usd AS {MONEY}) AS target_per_panel_usd,
              CAST(per_episode_budget_usd AS {MONEY}) AS per_episode_budget_usd FROM _series;
            CREATE TABLE episodes AS SELECT CAST(series AS VARCHAR) AS series, CAST(episode AS VARCHAR) AS episode,
              CAST(title AS VARCHAR) AS title, CAST(panels AS INTEGER) AS panels FROM _episodes;
            CREATE TABLE _whatif_raw AS SELECT CAST(series AS VARCHAR) AS series, CAST(provider AS VARCHAR) AS provider,
              CAST(episodes AS INTEGER) AS episodes, CAST(panels AS INTEGER) AS panels,
              CAST(platform AS VARCHAR) AS platform, CAST(model AS VARCHAR) AS model,
              CAST(endpoints AS VARCHAR) AS endpoints, CAST(max_references AS INTEGER) AS max_references,
              CAST(season_usd AS {MONEY}) AS season_usd, CAST(one_time_usd AS {MONEY}) AS one_time_usd,
              CAST(references_dropped AS INTEGER) AS references_dropped FROM _whatif;
            CREATE TABLE _trials AS SELECT CAST(series AS VARCHAR) AS series, CAST(model AS VARCHAR) AS model,
              CAST(platform AS VARCHAR) AS platform, CAST(endpoint AS VARCHAR) AS endpoint,
              CAST(cost_per_panel_usd AS DECIMAL(18,6)) AS cost_per_panel_usd, CAST(consistency AS DOUBLE) AS consistency,
              CAST(verdict AS VARCHAR) AS verdict, CAST(scorer AS VARCHAR) AS scorer,
              CAST(variations AS INTEGER) AS variations, CAST(character AS VARCHAR) AS character,
              CAST(trial_spent_usd AS {MONEY}) AS trial_spent_usd, CAST(trial_quote_usd AS {MONEY}) AS trial_quote_usd,
              CAST(provider AS VARCHAR) AS provider FROM _trials_df;
            CREATE TABLE model_recommendation AS SELECT CAST(series AS VARCHAR) AS series,
              CAST(action AS VARCHAR) AS action, CAST(endpoint AS VARCHAR) AS endpoint, CAST(model AS VARCHAR) AS model,
              CAST(reason AS VARCHAR) AS reason FROM _rec_df;
        """)
        con.execute(SQL_VIEWS.read_text())
    finally:
        con.close()


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
