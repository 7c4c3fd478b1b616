"""Benchmark: the panels step of a 68-panel episode (the cost study's episode size).

1. Against the loopback fake of fal at a fixed latency L per generation, for concurrency C in
   2, 8, 32: the panels step's wall time (from Dagster's step events) against the ideal
   ceil(68 / C) x L. Target: within 1.15x of ideal at C = 8, L = 2 s.
2. With the local provider: the pipeline's own overhead per panel (step time per panel minus the
   renderer's own time per panel), i.e. what the gateway, store, ledger and Dagster add.

Ratios within one run, on one machine; prints a table and writes bench/results.json.
Usage: python bench/run.py [--latency 2] [--concurrency 2 8 32] [--panels 68]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dagster import AssetKey, DagsterEventType, DagsterInstance  # noqa: E402

from webtoon_assets.bible import load_series  # noqa: E402
from webtoon_assets.paths import DataLayout  # noqa: E402
from webtoon_assets_tests.fal_harness import start_fake_fal  # noqa: E402

SERIES = "lantern_street"
SHOTS = ["wide", "medium", "close-up", "full", "over-shoulder", "establishing", "extreme-close-up", "pov"]
CASTS = [["mira"], ["mira", "tomas"], ["tomas"], ["mira", "juno"], ["juno"], ["tomas", "juno"], []]
PLACES = ["lantern_shop", "rain_alley", "harbor_market", "clocktower_roof"]


def long_episode(panels: int) -> str:
    """A script of ``panels`` distinct panels over four scenes."""
    lines = ["Title: Benchmark Night", ""]
    per_scene = math.ceil(panels / len(PLACES))
    n = 0
    for place in PLACES:
        lines += [f"SCENE {place}: Scene at {place}.", ""]
        for _ in range(per_scene):
            if n == panels:
                break
            cast = CASTS[n % len(CASTS)]
            lines += [f"PANEL {SHOTS[n % len(SHOTS)]}: {', '.join(cast)}", f"Beat number {n + 1} of the night.", ""]
            n += 1
    return "\n".join(lines)


def fresh_root(base: Path, name: str, panels: int) -> DataLayout:
    root = base / name
    shutil.copytree(REPO / "data" / "series", root / "series")
    shutil.copy(REPO / "data" / "pricebook.yaml", root / "pricebook.yaml")
    (root / "series" / SERIES / "episodes" / "bench.txt").write_text(long_episode(panels))
    return DataLayout(root)


def instance_dir(path: Path) -> Path:
    path.mkdir()
    (path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return path


def step_seconds(instance: DagsterInstance, run_id: str, step: str) -> float:
    events = instance.all_logs(run_id, of_type={DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS})
    times = {e.dagster_event.event_type: e.timestamp for e in events if e.step_key == step}
    return times[DagsterEventType.STEP_SUCCESS] - times[DagsterEventType.STEP_START]


def time_panels(layout: DataLayout, instance: DagsterInstance, env: dict[str, str],
                before_panels=lambda: None) -> float:
    """Materialize the episode's upstream assets, then time the panels step alone."""
    os.environ.update(env)
    from webtoon_assets.definitions import build_definitions

    job = build_definitions(layout).resolve_job_def(f"{SERIES}__season")
    instance.add_dynamic_partitions(f"{SERIES}__episodes", ["bench"])
    upstream = [AssetKey([SERIES, a]) for a in ("storyboard", "style_sheet", "character_sheets", "backgrounds")]
    job.execute_in_process(instance=instance, partition_key="bench", asset_selection=upstream)
    before_panels()
    result = job.execute_in_process(instance=instance, partition_key="bench",
                                    asset_selection=[AssetKey([SERIES, "panels"])])
    return step_seconds(instance, result.run_id, f"{SERIES}__panels")


def render_seconds(layout: DataLayout, panels: int) -> float:
    """The local renderer alone, on the same panel requests (its own cost, not the pipeline's)."""
    from webtoon_assets.manifests import ImageSet, Storyboard
    from webtoon_assets.recipes.requests import panel_references, panel_request
    from webtoon_assets.gateway.providers.local import LocalProvider

    series = load_series(layout, SERIES)
    out = layout.output_dir(SERIES, "bench")
    board = Storyboard.model_validate_json((out / "storyboard.json").read_text())
    style = ImageSet.model_validate_json((out / "style_sheet.json").read_text()).items[0]
    chars = ImageSet.model_validate_json((out / "character_sheets.json").read_text()).by_item()
    plates = ImageSet.model_validate_json((out / "backgrounds.json").read_text()).by_item()
    provider, dest = LocalProvider(), layout.root / "render-probe.png"
    started = time.perf_counter()
    for plan in board.panels:
        provider.generate(panel_request(series, "bench", plan, panel_references(series, plan, style, chars, plates)), dest)
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency", type=float, default=2.0)
    p.add_argument("--concurrency", type=int, nargs="+", default=[2, 8, 32])
    p.add_argument("--panels", type=int, default=68)
    a = p.parse_args()
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    base = Path(tempfile.mkdtemp(prefix="webtoon-bench-"))
    fake = start_fake_fal(base / "fake")
    results: dict = {"latency_s": a.latency, "panels": a.panels, "fal": [], "machine": os.uname().nodename}
    try:
        for c in a.concurrency:
            layout = fresh_root(base, f"fal-c{c}", a.panels)
            instance_dir(base / f"dagster-c{c}")
            with DagsterInstance.local_temp(str(base / f"dagster-c{c}")) as inst:
                fake.reset(latency=0.05)  # upstream quickly; then every panel takes L
                env = {**fake.env(), "WEBTOON_FAL_CONCURRENCY": str(c), "WEBTOON_FAL_REFERENCES": "inline"}
                wall = time_panels(layout, inst, env, before_panels=lambda: fake.configure(latency=a.latency))
                paid = fake.stats()["paid_by_prompt"]
            ideal = round(math.ceil(a.panels / c) * a.latency, 3)
            results["fal"].append({"concurrency": c, "wall_s": round(wall, 3), "ideal_s": ideal,
                                   "ratio": round(wall / ideal, 4), "panels_paid": sum(paid.values())})
            print(f"fal  C={c:>2}  panels step {wall:7.2f}s  ideal {ideal:6.1f}s  ratio {wall / ideal:.3f}", flush=True)

        for var in ("FAL_KEY", "WEBTOON_PROVIDER", "WEBTOON_FAL_BASE_URL"):
            os.environ.pop(var, None)
        os.environ["WEBTOON_PROVIDER"] = "local"
        layout = fresh_root(base, "local", a.panels)
        instance_dir(base / "dagster-local")
        with DagsterInstance.local_temp(str(base / "dagster-local")) as inst:
            step = time_panels(layout, inst, {"WEBTOON_PROVIDER": "local"})
        render = render_seconds(layout, a.panels)
        results["local"] = {"panels_step_s": round(step, 3), "render_s": round(render, 3),
                            "per_panel_ms": round(1000 * step / a.panels, 2),
                            "render_per_panel_ms": round(1000 * render / a.panels, 2),
                            "overhead_per_panel_ms": round(1000 * (step - render) / a.panels, 2)}
        loc = results["local"]
        print(f"local panels step {step:.2f}s = {loc['per_panel_ms']} ms/panel, of which rendering "
              f"{loc['render_per_panel_ms']} ms: pipeline overhead {loc['overhead_per_panel_ms']} ms/panel")
    finally:
        fake.stop()
        shutil.rmtree(base, ignore_errors=True)

    at8 = next((r for r in results["fal"] if r["concurrency"] == 8), None)
    if at8 and a.latency == 2.0:
        results["target"] = {"ratio_at_c8_l2": at8["ratio"], "limit": 1.15, "met": at8["ratio"] <= 1.15}
    print("\n| C | panels step (s) | ideal ceil(N/C)xL (s) | ratio |\n|---|---|---|---|")
    for r in results["fal"]:
        print(f"| {r['concurrency']} | {r['wall_s']} | {r['ideal_s']} | {r['ratio']} |")
    if "target" in results:
        t = results["target"]
        print(f"\ntarget: ratio at C=8, L=2s {t['ratio_at_c8_l2']} <= {t['limit']}: {'met' if t['met'] else 'MISSED'}")
    (REPO / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {REPO / 'bench' / 'results.json'}")


if __name__ == "__main__":
    main()
