"""Benchmark: the ``episode_strip`` step of a 68-panel lettered episode, against bare Pillow.

The episode is made as the project makes it: the season job with the local (offline) provider,
materialized up to ``lettered_panels`` in a temporary data root and Dagster instance. Then, in the
same run and on the same files:

- baseline: bare Pillow — open each lettered panel, resize it to its 800 px placement (LANCZOS, as
  the product does) and paste it, with its gutters, onto one 800 px wide white strip; then encode
  each WEBTOON slice (the product's own cut bounds) once as JPEG with Pillow's defaults at the
  quality the product chose (``im.save(buf, "JPEG", quality=q)``), in this process;
- measured: the ``episode_strip`` step alone, from Dagster's STEP_START to STEP_SUCCESS events, in
  a child process of its own (so that its peak resident memory is the step's, not this process's).

Each is taken ``repeat`` times and the fastest kept (the machine is shared). Goal: measured /
baseline <= 1.5. The step's memory is reported too: the child's peak resident memory (VmHWM) before
the step (Dagster and the definitions loaded) and after it, and the growth, i.e. what the step added.

Runnable alone: ``python -m bench.strip [--panels 68] [--repeat 3] [--full-strips] [--out rows.json]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, Row, python_measured, table, write_results

SERIES = "lantern_street"
EPISODE = "bench"
STEP = f"{SERIES}__episode_strip"
GOAL = 1.5
SEASON_PEAK_MB = 500  # the season's peak memory goal: the strip step's process must fit it alone
STEP_MARK = "bench-strip-step="


def _env() -> dict[str, str]:
    return {"WEBTOON_PROVIDER": "local", "DAGSTER_DISABLE_TELEMETRY": "1"}


def prepare(base: Path, panels: int) -> tuple[Path, Path]:
    """A data root and a Dagster instance folder where the episode is lettered (every asset up to
    ``lettered_panels``, made by the season job with the local provider)."""
    from bench.episode import fresh_root, instance_dir
    from dagster import AssetKey, DagsterInstance

    for var in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "WEBTOON_FAL_BASE_URL"):
        os.environ.pop(var, None)
    os.environ.update(_env())
    from webtoon_assets.definitions import build_definitions

    layout = fresh_root(base, "data", panels)
    home = instance_dir(base / "dagster")
    with DagsterInstance.local_temp(str(home)) as instance:
        job = build_definitions(layout).resolve_job_def(f"{SERIES}__season")
        instance.add_dynamic_partitions(f"{SERIES}__episodes", [EPISODE])
        upstream = [AssetKey([SERIES, a]) for a in ("storyboard", "style_sheet", "character_sheets", "prop_sheets",
                                                    "backgrounds", "panels", "lettered_panels")]
        job.execute_in_process(instance=instance, partition_key=EPISODE, asset_selection=upstream)
    return layout.root, home


def _hwm_mb() -> float:
    """This process's peak resident memory so far (VmHWM). Not ``ru_maxrss``: a child started with
    vfork (as ``subprocess`` does) inherits its parent's high-water mark in ``ru_maxrss`` at exec,
    so a child of a parent that once held a strip would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _step(root: Path, home: Path, full_strips: bool = False) -> None:
    """In a child process: materialize ``episode_strip`` alone; print the step's seconds and the
    process's peak RSS before the step (after start-up and definitions) and after it."""
    os.environ.update(_env())
    from bench.episode import step_seconds
    from dagster import AssetKey, DagsterInstance

    from webtoon_assets.definitions import build_definitions
    from webtoon_assets.paths import DataLayout

    with DagsterInstance.local_temp(str(home)) as instance:
        job = build_definitions(DataLayout(root)).resolve_job_def(f"{SERIES}__season")
        before = _hwm_mb()
        config = {"ops": {STEP: {"config": {"full_strips": full_strips}}}}
        result = job.execute_in_process(instance=instance, partition_key=EPISODE, run_config=config,
                                        asset_selection=[AssetKey([SERIES, "episode_strip"])])
        after = _hwm_mb()
        seconds = step_seconds(instance, result.run_id, STEP)
    print(STEP_MARK + json.dumps({"seconds": seconds, "rss_before_mb": before, "rss_after_mb": after}))


def measure_step(root: Path, home: Path, full_strips: bool = False) -> dict:
    m = python_measured(["-m", "bench.strip", "--step", str(root), str(home), *(["--full-strips"] * full_strips)],
                        env=_env())
    line = next(ln for ln in reversed(m.stdout.splitlines()) if ln.startswith(STEP_MARK))
    return json.loads(line[len(STEP_MARK):])


def baseline_seconds(root: Path) -> tuple[float, int]:
    """Bare Pillow on the episode the product just cut: one 800 px strip, one JPEG per slice."""
    from PIL import Image

    from webtoon_assets.compose import canvas
    from webtoon_assets.manifests import LetteredSet, Storyboard, Strip

    out = root / "output" / SERIES / EPISODE
    board = Storyboard.model_validate_json((out / "storyboard.json").read_text())
    lettered = LetteredSet.model_validate_json((out / "lettered_panels.json").read_text()).by_item()
    strip = Strip.model_validate_json((out / "episode_strip.json").read_text())
    panels_in = [canvas.PanelIn(p.id, Path(lettered[p.id].path), p.gutter, p.width, p.align) for p in board.panels]
    placed, height = canvas.lay_out(panels_in)  # headers only: where each panel goes (not timed)
    bounds, y = [], 0
    for s in strip.slices:
        bounds.append((y, y + s.height))
        y += s.height
    assert y == height, (y, height)

    started = time.perf_counter()
    im = Image.new("RGB", (canvas.STRIP_WIDTH, height), "white")
    for p in placed:
        with Image.open(p.path) as panel:
            panel = panel if panel.mode == "RGB" else panel.convert("RGB")
            im.paste(panel.resize((p.width, p.height), Image.Resampling.LANCZOS), (p.x, p.y))
    for y0, y1 in bounds:
        buf = io.BytesIO()
        im.crop((0, y0, im.width, y1)).save(buf, "JPEG", quality=strip.jpeg_quality)
    seconds = time.perf_counter() - started
    del im
    return seconds, strip.jpeg_quality


def measure(base: Path, panels: int = 68, repeat: int = 3, full_strips: bool = False) -> list[Row]:
    """The row for the issue; with ``full_strips``, the step is also timed once with the whole strip
    as PNG asked for (its cost, in ``extra``: not the goal's default)."""
    root, home = prepare(base, panels)
    with_strips = measure_step(root, home, full_strips=True) if full_strips else None
    steps, baselines = [], []
    for _ in range(repeat):  # alternate, so that a busy moment on the shared machine hits both
        steps.append(measure_step(root, home))
        baselines.append(baseline_seconds(root)[0])
    best = min(steps, key=lambda s: s["seconds"])
    strip = json.loads((root / "output" / SERIES / EPISODE / "episode_strip.json").read_text())
    step_mb = max(s["rss_after_mb"] - s["rss_before_mb"] for s in steps)
    return [Row(what=f"episode_strip, {panels} panels",
                baseline=f"bare Pillow: paste {panels} panels resized to 800 px on one strip, "
                         f"one default JPEG (q{strip['jpeg_quality']}) per slice",
                baseline_s=round(min(baselines), 3), measured_s=round(best["seconds"], 3), goal=GOAL,
                limits={"step process peak MB": (round(max(s["rss_after_mb"] for s in steps), 1), SEASON_PEAK_MB)},
                extra={"baseline_runs_s": [round(b, 3) for b in baselines],
                       "step_runs_s": [round(s["seconds"], 3) for s in steps],
                       "step_process_peak_mb": round(max(s["rss_after_mb"] for s in steps), 1),
                       "step_process_before_mb": round(min(s["rss_before_mb"] for s in steps), 1),
                       "step_peak_growth_mb": round(step_mb, 1),
                       "height_px": strip["height"], "slices": len(strip["slices"]),
                       "total_mb": round(strip["total_bytes"] / 1e6, 3), "jpeg_quality": strip["jpeg_quality"],
                       **({"with_full_strips_s": round(with_strips["seconds"], 3),
                           "with_full_strips_peak_mb": round(with_strips["rss_after_mb"], 1)} if with_strips else {})})]


def main() -> None:
    if sys.argv[1:2] == ["--step"]:
        _step(Path(sys.argv[2]), Path(sys.argv[3]), full_strips="--full-strips" in sys.argv[4:])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--panels", type=int, default=68)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--full-strips", action="store_true", help="also time the step once with full_strips on")
    p.add_argument("--keep", action="store_true", help="keep the temporary data root")
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    a = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="webtoon-bench-strip-"))
    try:
        rows = measure(base, a.panels, a.repeat, a.full_strips)
    finally:
        if a.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print(table(rows))
    for r in rows:
        print(json.dumps(r.extra))
    if a.out:
        write_results(rows, a.out, machine=os.uname().nodename)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
