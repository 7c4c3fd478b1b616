"""A whole offline season as a user makes it: ``webtoon demo`` over 10 episodes of 68 panels, in its
own process, on the project's own instance config (in a temporary home). Measured: wall time and
peak memory. Baseline, in the same run: the preview renderer alone drawing the season's 680 panels
(the work the season cannot do without); the goals are absolute (≤ 90 s, ≤ 500 MB).

``python -m bench.season [--episodes 10] [--panels 68]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from bench.common import Row, python_measured, table
from bench.episode import SERIES, fresh_root
from bench.panels import render_seconds
from webtoon_assets.instance import PROJECT_CONFIG, prepare_home

LIMIT_SECONDS, LIMIT_MB = 90.0, 500.0


def measure(base: Path, episodes: int = 10, panels: int = 68) -> list[Row]:
    project = base / "season"
    ids = [f"e{i:02d}" for i in range(1, episodes + 1)]
    layout = fresh_root(project, "data", panels, episodes=ids)
    home = prepare_home(layout.root / "dagster", PROJECT_CONFIG, base=project)
    env = {"WEBTOON_DATA_DIR": str(layout.root), "DAGSTER_HOME": str(home), "WEBTOON_PROVIDER": "local",
           "FAL_KEY": "", "DAGSTER_DISABLE_TELEMETRY": "1"}
    run = python_measured(["-m", "webtoon_assets.cli", "demo", "--series", SERIES], env=env)
    made = [e for e in ids if (layout.output_dir(SERIES, e) / "reader.html").is_file()]
    if made != ids:
        raise RuntimeError(f"the season bench made {made}, not {ids}:\n{run.stdout[-3000:]}")
    render = sum(render_seconds(layout, e) for e in ids)
    return [Row(f"season offline, {episodes} x {panels} panels (webtoon demo)",
                f"the renderer alone, the same {episodes * panels} panels", render, run.seconds,
                limits={"seconds": (round(run.seconds, 1), LIMIT_SECONDS), "peak_mb": (round(run.peak_mb), LIMIT_MB)})]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--panels", type=int, default=68)
    a = p.parse_args()
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    base = Path(tempfile.mkdtemp(prefix="webtoon-bench-"))
    try:
        print(table(measure(base, a.episodes, a.panels)))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
