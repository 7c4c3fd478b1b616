"""An episode launched as the UI launches it: a run submitted to the instance's run queue, dequeued
by the daemon and started by the project's run launcher in a process of its own, on the project's
instance config (``dagster.yaml``, in a temporary home). Measured: from the run's creation (the
click) to its end. Baseline, in the same bench: the same job run in-process (``execute_in_process``
in a process that has already loaded the project, as ``webtoon demo`` does). Both for a first-time
offline episode and for the same episode again, fully cached.

``python -m bench.launch [--panels 68]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, Row, table
from bench.episode import SERIES, fresh_root

GOAL = 1.5
EPISODE = "bench"


def _env(layout_root: Path, home: Path) -> dict[str, str]:
    return {**os.environ, "WEBTOON_DATA_DIR": str(layout_root), "DAGSTER_HOME": str(home),
            "WEBTOON_PROVIDER": "local", "FAL_KEY": "", "DAGSTER_DISABLE_TELEMETRY": "1"}


def _home(project: Path, layout_root: Path) -> Path:
    from webtoon_assets.instance import PROJECT_CONFIG, prepare_home

    return prepare_home(layout_root / "dagster", PROJECT_CONFIG, base=project)


def _wait_for_daemon(instance, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster-daemon exited {proc.returncode}: {proc.stderr.read()[-3000:]}")
        beats = instance.get_daemon_heartbeats()
        if "QUEUED_RUN_COORDINATOR" in beats:
            return
        time.sleep(0.5)
    raise RuntimeError("dagster-daemon did not start its run queue")


def _phases(instance, run_id: str, created: float) -> dict[str, float]:
    """Seconds from the run's creation to each stage: dequeued (the daemon's queue), started (the
    run's process running the project), steps done, ended."""
    marks: dict[str, float] = {}
    for e in instance.all_logs(run_id):
        kind = e.dagster_event.event_type_value if e.dagster_event else ""
        name = {"PIPELINE_STARTING": "dequeued_s", "PIPELINE_START": "started_s",
                "PIPELINE_SUCCESS": "ended_s"}.get(kind)
        if name and name not in marks:
            marks[name] = round(e.timestamp - created, 3)
    return marks


def _launched_seconds(env: dict[str, str], workspace: Path, instance, timeout: float = 900
                      ) -> tuple[float, dict[str, float]]:
    """Submit the season job for the episode (as the UI's Materialize does), wait for its end;
    the run's own record gives creation and end times."""
    before = {r.run_id for r in instance.get_runs()}
    subprocess.run([str(Path(sys.executable).with_name("dagster")), "job", "launch", "-w", str(workspace),
                    "-j", f"{SERIES}__season", "--tags", f'{{"dagster/partition": "{EPISODE}"}}'],
                   env=env, cwd=REPO, check=True, capture_output=True, text=True)
    run = next(r for r in instance.get_runs() if r.run_id not in before)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = instance.get_run_record_by_id(run.run_id)
        if record.dagster_run.is_finished:
            if record.dagster_run.status.value != "SUCCESS":
                raise RuntimeError(f"the launched run {run.run_id} ended {record.dagster_run.status.value}")
            created = record.create_timestamp.timestamp()
            return record.end_time - created, _phases(instance, run.run_id, created)
        time.sleep(0.2)
    raise RuntimeError(f"the launched run {run.run_id} did not end in {timeout:g} s")


def measure_launched(base: Path, panels: int) -> tuple[tuple[float, dict], tuple[float, dict]]:
    from dagster import DagsterInstance

    project = base / "launched"
    layout = fresh_root(project, "data", panels, episodes=[EPISODE])
    home = _home(project, layout.root)
    workspace = project / "workspace.yaml"
    workspace.write_text("load_from:\n  - python_module:\n      module_name: webtoon_assets.definitions\n"
                         f"      working_directory: {REPO}\n      location_name: webtoon_assets\n")
    env = _env(layout.root, home)
    os.environ["DAGSTER_HOME"] = str(home)
    instance = DagsterInstance.from_config(str(home))
    instance.add_dynamic_partitions(f"{SERIES}__episodes", [EPISODE])
    daemon = subprocess.Popen([str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(workspace)],
                              env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_daemon(instance, daemon)
        first = _launched_seconds(env, workspace, instance)
        cached = _launched_seconds(env, workspace, instance)
    finally:
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        instance.dispose()
    return first, cached


def measure_in_process(base: Path, panels: int) -> tuple[float, float]:
    """The same two runs in this process (the project already imported, as in ``webtoon demo``)."""
    from dagster import DagsterInstance

    project = base / "in-process"
    layout = fresh_root(project, "data", panels, episodes=[EPISODE])
    home = _home(project, layout.root)
    saved = dict(os.environ)
    os.environ.update(_env(layout.root, home))
    try:
        from webtoon_assets.definitions import build_definitions

        instance = DagsterInstance.from_config(str(home))
        instance.add_dynamic_partitions(f"{SERIES}__episodes", [EPISODE])
        job = build_definitions(layout).resolve_job_def(f"{SERIES}__season")
        times = []
        for _ in range(2):
            started = time.perf_counter()
            job.execute_in_process(instance=instance, partition_key=EPISODE)
            times.append(time.perf_counter() - started)
        instance.dispose()
        return times[0], times[1]
    finally:
        os.environ.clear()
        os.environ.update(saved)


def measure(base: Path, panels: int = 68) -> list[Row]:
    in_first, in_cached = measure_in_process(base, panels)
    (ui_first, first_phases), (ui_cached, cached_phases) = measure_launched(base, panels)
    return [Row(f"episode of {panels} panels launched from the UI (daemon), fully cached", "the same run in-process",
                in_cached, ui_cached, goal=GOAL, extra=cached_phases),
            Row(f"episode of {panels} panels launched from the UI (daemon), first time offline",
                "the same run in-process", in_first, ui_first, goal=GOAL, extra=first_phases)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--panels", type=int, default=68)
    a = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="webtoon-bench-"))
    try:
        rows = measure(base, a.panels)
        print(table(rows))
        for r in rows:
            print(r.what, r.extra)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
