"""The bench's season: a copy of the sample series in a temporary data root, with one long
episode (68 panels by default, the cost study's episode size) over its four places, lettered as a
real episode is (dialogue, thoughts, captions, sound effects)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance

from bench.common import REPO
from webtoon_assets.paths import DataLayout

SERIES = "lantern_street"
SHOTS = ["wide", "medium", "close-up", "full", "over-shoulder", "establishing", "extreme-close-up", "pov"]
CASTS = [["mira"], ["mira", "tomas"], ["tomas"], ["mira", "juno"], ["juno"], ["tomas", "juno"], []]
PLACES = ["lantern_shop", "rain_alley", "harbor_market", "clocktower_roof"]


def lettering(n: int, cast: list[str]) -> list[str]:
    """What a panel says, as a real episode's panels do: a line from each character in it (one as a
    thought), a caption on every fourth panel, a sound effect on every sixth; some panels are silent."""
    out = [f"CAPTION: Hour {n // 8 + 1} of the longest night." for _ in range(n % 4 == 0)]
    for i, who in enumerate(cast):
        kind = " (thought)" if (n + i) % 5 == 0 else ""
        out.append(f"{who.upper()}{kind}: Line {n + 1}.{i + 1}, the lanterns still will not light, and the rain goes on.")
    return out + [f"SFX: CREAK {n + 1}" for _ in range(n % 6 == 5)]


def long_episode(panels: int, tag: str = "") -> str:
    """A script of ``panels`` distinct panels over four scenes (``tag`` makes episodes differ)."""
    lines = [f"Title: Benchmark Night {tag}".rstrip(), ""]
    per_scene = math.ceil(panels / len(PLACES))
    n = 0
    for place in PLACES:
        if n == panels:
            break
        lines += [f"SCENE {place}: Scene at {place}.", ""]
        for _ in range(per_scene):
            if n == panels:
                break
            cast = CASTS[n % len(CASTS)]
            lines += [f"PANEL {SHOTS[n % len(SHOTS)]}: {', '.join(cast)}", f"Beat number {n + 1} of the night{' ' + tag if tag else ''}."]
            lines += lettering(n, cast) + [""]
            n += 1
    return "\n".join(lines)


def fresh_root(base: Path, name: str, panels: int, episodes: list[str] | None = None) -> DataLayout:
    """A data root holding the sample series with one long episode ``bench`` added or, given
    ``episodes``, with those long episodes in place of the sample's."""
    root = base / name
    shutil.copytree(REPO / "data" / "series", root / "series")
    shutil.copy(REPO / "data" / "pricebook.yaml", root / "pricebook.yaml")
    folder = root / "series" / SERIES / "episodes"
    if episodes:
        for old in folder.glob("*.txt"):
            old.unlink()
    for eid in episodes or ["bench"]:
        (folder / f"{eid}.txt").write_text(long_episode(panels, "" if eid == "bench" else eid))
    return DataLayout(root)


def instance_dir(path: Path) -> Path:
    path.mkdir()
    (path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return path


def step_window(instance: DagsterInstance, run_id: str, step: str) -> tuple[float, float]:
    """When the step started and succeeded (the event log's clock: time.time())."""
    events = instance.all_logs(run_id, of_type={DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS})
    times = {e.dagster_event.event_type: e.timestamp for e in events if e.step_key == step}
    return times[DagsterEventType.STEP_START], times[DagsterEventType.STEP_SUCCESS]


def step_seconds(instance: DagsterInstance, run_id: str, step: str) -> float:
    start, end = step_window(instance, run_id, step)
    return end - start


