"""The panels step of a 68-panel episode (the cost study's episode size).

1. Against the loopback fake of fal, which runs at most C requests at once (fal counts only the
   requests in progress against an account's concurrency; the rest wait in its queue) at a fixed
   latency L each: the step's wall time (Dagster's step events) against the ideal ceil(N / C) x L.
2. With the local provider: the pipeline's own overhead per panel, i.e. the step's time minus the
   renderer's own time on the same requests, measured in the same run.

``python -m bench.panels [--latency 2] [--concurrency 8 32] [--panels 68]``
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

from dagster import AssetKey, DagsterInstance

from bench.common import Row, table
from bench.episode import SERIES, fresh_root, instance_dir, step_window
from webtoon_assets.bible import load_series
from webtoon_assets.paths import DataLayout
from webtoon_assets_tests.fal_harness import start_fake_fal

def time_panels(layout: DataLayout, instance: DagsterInstance, env: dict[str, str],
                before_panels=lambda: None, window: list | None = None) -> float:
    """Materialize the episode's upstream assets, then time the panels step alone (its start and
    end appended to ``window``)."""
    os.environ.update(env)
    from webtoon_assets.definitions import build_definitions

    job = build_definitions(layout).resolve_job_def(f"{SERIES}__season")
    instance.add_dynamic_partitions(f"{SERIES}__episodes", ["bench"])
    upstream = [AssetKey([SERIES, a]) for a in ("storyboard", "style_sheet", "character_sheets", "prop_sheets",
                                                "backgrounds")]
    job.execute_in_process(instance=instance, partition_key="bench", asset_selection=upstream)
    before_panels()
    result = job.execute_in_process(instance=instance, partition_key="bench",
                                    asset_selection=[AssetKey([SERIES, "panels"])])
    start, end = step_window(instance, result.run_id, f"{SERIES}__panels")
    if window is not None:
        window += [start, end]
    return end - start


def render_seconds(layout: DataLayout, episode: str = "bench") -> float:
    """The local renderer alone, on the same panel requests (its own cost, not the pipeline's)."""
    from webtoon_assets.manifests import ImageSet, Storyboard
    from webtoon_assets.recipes.requests import panel_references, panel_request
    from webtoon_assets.gateway.providers.local import LocalProvider

    series = load_series(layout, SERIES)
    out = layout.output_dir(SERIES, episode)
    board = Storyboard.model_validate_json((out / "storyboard.json").read_text())
    style = ImageSet.model_validate_json((out / "style_sheet.json").read_text()).items[0]
    chars = ImageSet.model_validate_json((out / "character_sheets.json").read_text()).by_item()
    plates = ImageSet.model_validate_json((out / "backgrounds.json").read_text()).by_item()
    provider, dest = LocalProvider(), layout.root / "render-probe.png"
    started = time.perf_counter()
    for plan in board.panels:
        provider.generate(panel_request(series, episode, plan, panel_references(series, plan, style, chars, plates)), dest)
    return time.perf_counter() - started




def _phases(timeline: list, start: float, end: float, latency: float, slots: int) -> dict[str, float]:
    """Where the step's time over the ideal went, from the fake's own record of each request
    (submitted, started, finished; the same host's clock): before fal had the first request, the
    requests' span on fal beyond the ideal (slots left idle between waves), after the last one finished."""
    on_fal = [(s, b, e) for _, s, b, e in timeline if s >= start and e is not None and e <= end]
    if not on_fal:
        return {}
    first, last = min(s for s, _, _ in on_fal), max(e for _, _, e in on_fal)
    ideal = math.ceil(len(on_fal) / slots) * latency
    return {"before_first_submit_s": round(first - start, 3), "on_fal_beyond_ideal_s": round(last - first - ideal, 3),
            "after_last_finished_s": round(end - last, 3)}


GOALS = {8: 1.05, 32: 1.10}  # issue 11: the panels step against the ideal ceil(N / C) x L


def measure_fal(base: Path, latency: float = 2.0, concurrency: tuple[int, ...] = (8, 32), panels: int = 68,
                repeat: int = 2) -> list[Row]:
    """The panels step against the fake fal holding at most C requests in progress (``slots``); the
    fastest of ``repeat`` runs (a fresh data root each) for each C."""
    fake = start_fake_fal(base / "fake")
    rows = []
    saved = dict(os.environ)
    try:
        for c in concurrency:
            walls, paid, phases = [], 0, []
            for i in range(repeat):
                layout = fresh_root(base, f"fal-c{c}-{i}", panels)
                instance_dir(base / f"dagster-c{c}-{i}")
                with DagsterInstance.local_temp(str(base / f"dagster-c{c}-{i}")) as inst:
                    fake.reset(latency=0.05)  # the upstream assets quickly; then every panel takes L
                    env = {**fake.env(), "WEBTOON_FAL_CONCURRENCY": str(c)}
                    window: list[float] = []
                    walls.append(time_panels(layout, inst, env, window=window,
                                             before_panels=lambda c=c: fake.configure(latency=latency, slots=c)))
                    stats = fake.stats()
                paid = max(paid, stats["counts"]["paid"])
                phases.append(_phases(stats["timeline"], *window, latency, c))
            ideal = math.ceil(panels / c) * latency
            rows.append(Row(f"panels vs fake fal, C={c}, L={latency:g} s", f"ideal ceil({panels}/{c}) x L", ideal,
                            min(walls), goal=GOALS.get(c),
                            extra={"runs_s": [round(w, 3) for w in walls], "paid_requests": paid,
                                   "phases_of_fastest": phases[walls.index(min(walls))],
                                   "peak_on_fal": stats["counts"].get("peak_on_fal"), "concurrency": c}))
    finally:
        os.environ.clear()
        os.environ.update(saved)
        fake.stop()
    return rows


def measure_overhead(base: Path, panels: int = 68, limit_ms: float = 15.0, repeat: int = 3) -> list[Row]:
    """Local provider: the panels step against the renderer alone on the same requests, each taken
    ``repeat`` times alternately (a fresh data root each time) and the fastest kept: the machine is
    shared, and the least disturbed run is the truest of each."""
    saved = dict(os.environ)
    steps, renders = [], []
    try:
        for var in ("FAL_KEY", "WEBTOON_FAL_BASE_URL"):
            os.environ.pop(var, None)
        for i in range(repeat):
            layout = fresh_root(base, f"local-{i}", panels)
            instance_dir(base / f"dagster-local-{i}")
            with DagsterInstance.local_temp(str(base / f"dagster-local-{i}")) as inst:
                steps.append(time_panels(layout, inst, {"WEBTOON_PROVIDER": "local"}))
            renders.append(render_seconds(layout))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    step, render = min(steps), min(renders)
    overhead = 1000 * (step - render) / panels
    return [Row(f"pipeline overhead per panel, local provider, {panels} panels", "the renderer alone", render, step,
                limits={"overhead_ms_per_panel": (round(overhead, 2), limit_ms)},
                extra={"render_ms_per_panel": round(1000 * render / panels, 2),
                       "step_ms_per_panel": round(1000 * step / panels, 2),
                       "step_runs_s": [round(x, 3) for x in steps], "render_runs_s": [round(x, 3) for x in renders]})]


def measure(base: Path, latency: float = 2.0, concurrency: tuple[int, ...] = (8, 32), panels: int = 68
            ) -> list[Row]:
    return measure_fal(base, latency, concurrency, panels) + measure_overhead(base, panels)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency", type=float, default=2.0)
    p.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    p.add_argument("--panels", type=int, default=68)
    p.add_argument("--only", choices=["fal", "overhead"])
    a = p.parse_args()
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    base = Path(tempfile.mkdtemp(prefix="webtoon-bench-"))
    try:
        rows = []
        if a.only != "overhead":
            rows += measure_fal(base, a.latency, tuple(a.concurrency), a.panels)
        if a.only != "fal":
            rows += measure_overhead(base, a.panels)
        print(table(rows))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
