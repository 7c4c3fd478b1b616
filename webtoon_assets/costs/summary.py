"""The season's cost summary, as printed at the end of `make demo` and by `webtoon costs`."""

from __future__ import annotations

from pathlib import Path

import duckdb

from webtoon_assets.costs.sql import literal


def season_summary(db: Path, series: str) -> str:
    con = duckdb.connect(str(db), read_only=True)
    try:
        lines: list[str] = []
        for (provider,) in con.execute("SELECT DISTINCT provider FROM amortization "
                                       f"WHERE series = {literal(series)} ORDER BY 1").fetchall():
            basis = "list price: an exact quote, nothing billed" if provider == "local" else "billed"
            lines.append(f"{series} via {provider} ({basis})")
            lines.append(f"  {'episode':<10}{'panels':>7}{'as paid':>10}{'amortised':>11}"
                         f"{'$/panel paid':>14}{'$/panel amort.':>16}  target")
            for ep, panels, paid, amort, ppp, ppa, target, ok in con.execute(
                    "SELECT episode, panels, as_paid_usd, amortised_usd, as_paid_per_panel_usd, "
                    "amortised_per_panel_usd, target_per_panel_usd, meets_target FROM amortization "
                    f"WHERE series = {literal(series)} AND provider = {literal(provider)} ORDER BY episode").fetchall():
                lines.append(f"  {ep:<10}{panels or 0:>7}{paid:>10.4f}{amort:>11.4f}{ppp or 0:>14.4f}{ppa or 0:>16.4f}"
                             f"  ${target.normalize()} {'met' if ok else 'MISSED'}")
            row = con.execute("SELECT total_usd, per_panel_usd, one_time_usd, per_episode_usd FROM projection "
                              f"WHERE series = {literal(series)} AND provider = {literal(provider)} AND episodes = 10").fetchone()
            if row:
                lines.append(f"  10-episode projection: ${row[0]:.2f} (${row[1]:.4f}/panel) = one-time ${row[2]:.4f}"
                             f" + 10 x ${row[3]:.4f} per episode")
            # Ranked by the 10-episode total; `rank` counts only models that take every reference image
            # (those that cannot are cheaper but not comparable: rank NULL, ranked among all by rank_all).
            cheapest = con.execute("SELECT rank, platform, model, per_panel_usd, ten_episode_usd FROM platform_whatif "
                                   f"WHERE series = {literal(series)} AND usage_from = {literal(provider)} "
                                   "AND rank IS NOT NULL ORDER BY rank LIMIT 3").fetchall()
            if cheapest:
                lines.append("  cheapest platforms for 10 episodes of this usage (taking every reference image; "
                             "all: platform_whatif):")
                for rank, platform, model, per_panel, ten in cheapest:
                    lines.append(f"    {rank}. {platform:<10} {model:<34} ${per_panel:.4f}/panel, 10 episodes ${ten:.2f}")
            packed = con.execute("SELECT platform, model, per_panel_usd, ten_episode_usd FROM platform_whatif_packed "
                                 f"WHERE series = {literal(series)} AND usage_from = {literal(provider)} "
                                 "AND rank = 1").fetchone()
            if packed:
                lines.append(f"  with each panel's references packed into one image (pack_references: board): "
                             f"{packed[0]} {packed[1]} ${packed[2]:.4f}/panel, 10 episodes ${packed[3]:.2f} "
                             "(all: platform_whatif_packed)")
        return "\n".join(lines) or f"{series}: nothing generated yet"
    finally:
        con.close()


def money_warnings(db: Path) -> str:
    """What the sums above cannot vouch for: unsettled unknown outcomes and damaged ledger rows."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        lines: list[str] = []
        unknown = con.execute("SELECT series, episode, asset, item, endpoint, provider_request_id, held_usd, time "
                              "FROM unknown_outcomes ORDER BY time").fetchall()
        if unknown:
            held = sum(u[6] for u in unknown)
            lines.append(f"Unknown outcomes: {len(unknown)} paid call(s) whose answer was lost, counted as spent at "
                         f"their quote (${held}); run `webtoon reconcile` to settle them against fal's records:")
            for series, ep, asset, item, endpoint, rid, usd, when in unknown:
                lines.append(f"  {when:%Y-%m-%d %H:%M:%S} {series}/{ep or '-'} {asset} {item} on {endpoint} "
                             f"(${usd}{', request ' + rid if rid else ', no request id'})")
        problems = con.execute("SELECT file, line, reason FROM ledger_problems").fetchall()
        if problems:
            lines.append(f"Damaged ledger rows: {len(problems)}, not counted in any sum above "
                         "(`webtoon ledger verify` lists them):")
            lines += [f"  {f}:{n}: {why}" for f, n, why in problems[:20]]
        return "\n".join(lines)
    finally:
        con.close()


DASHBOARD_COLUMNS = ["series", "provider", "episode", "panels", "spent_usd", "quote_usd", "amortised_usd",
                     "amortised_per_panel_usd", "target_per_panel_usd", "meets_target", "budget_usd", "budget_left_usd"]


def season_dashboard(db: Path) -> tuple[list[dict], list[dict]]:
    """Per episode: spend, quote, amortised $/panel against the target, and the episode budget left;
    per series and provider: the season so far and its projection over the planned episodes."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        cur = con.execute("""
            SELECT a.series, a.provider, a.episode, a.panels, coalesce(e.spent_usd, 0), coalesce(e.quote_usd, 0),
                   a.amortised_usd, a.amortised_per_panel_usd, a.target_per_panel_usd, a.meets_target,
                   s.per_episode_budget_usd,
                   s.per_episode_budget_usd - coalesce(e.counted_usd, 0)
            FROM amortization a
            LEFT JOIN episode_spend e USING (series, provider, episode)
            JOIN series_info s USING (series)
            ORDER BY a.series, a.provider, a.episode""")
        episodes = [dict(zip(DASHBOARD_COLUMNS, row)) for row in cur.fetchall()]
        cur = con.execute("""
            SELECT a.series, a.provider, count(*) AS episodes_made, sum(a.panels) AS panels,
                   sum(e.spent_usd) AS spent_usd, sum(e.quote_usd) AS quote_usd,
                   CAST(sum(a.amortised_usd) / nullif(sum(a.panels), 0) AS DECIMAL(18,6)) AS amortised_per_panel_usd,
                   any_value(s.target_per_panel_usd) AS target_per_panel_usd,
                   any_value(s.planned_episodes) AS planned_episodes,
                   any_value(p.total_usd) AS projected_season_usd
            FROM amortization a
            LEFT JOIN episode_spend e USING (series, provider, episode)
            JOIN series_info s USING (series)
            LEFT JOIN projection p ON p.series = a.series AND p.provider = a.provider
                                  AND p.episodes = s.planned_episodes
            GROUP BY a.series, a.provider ORDER BY a.series, a.provider""")
        names = [d[0] for d in cur.description]
        seasons = [dict(zip(names, row)) for row in cur.fetchall()]
        return episodes, seasons
    finally:
        con.close()
