"""An episode launched as the UI launches it: a run submitted to the instance's run queue, dequeued
by the daemon and started by the project's run launcher in a process of its own, on the project's
instance config (``dagster.yaml``, in a temporary home). Measured: from the run's creation (the
click) to its end. Baseline, in the same bench: the same job run in-process (``execute_in_process``
in a process that has already loaded the project, as ``webtoon demo`` does). Both for a first-time
offline episode and for the same episode again, fully cached, on a daemon that has launched a run
before (as under ``make ui`` after the first click): the daemon's very first launch also starts the
launcher's warm parent (webtoon_assets/run_workers.py); it is measured on a 2-panel warm-up episode
and reported beside the rows (``daemon_first_launch``).

``python -m bench.launch [--panels 68] [--no-warm-workers]`` (the latter: Dagster's default way of
starting a run's process, for comparison)
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
from bench.episode import SERIES, fresh_root, long_episode

GOAL = 1.5
EPISODE = "bench"
WARMUP = "warmup"  # the daemon's first launch (a short episode)
WARMUP_PANELS = 2


def _env(layout_root: Path, home: Path) -> dict[str, str]:
    return {**os.environ, "WEBTOON_DATA_DIR": str(layout_root), "DAGSTER_HOME": str(home),
            "WEBTOON_PROVIDER": "local", "FAL_KEY": "", "DAGSTER_DISABLE_TELEMETRY": "1"}


def _home(project: Path, layout_root: Path, warm_workers: bool = True) -> Path:
    import yaml

    from webtoon_assets.instance import PROJECT_CONFIG, prepare_home

    home = prepare_home(layout_root / "dagster", PROJECT_CONFIG, base=project)
    if not warm_workers:
        config_file = home / "dagster.yaml"
        config = yaml.safe_load(config_file.read_text())
        config["run_launcher"].setdefault("config", {})["warm_run_workers"] = False
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    return home


def _wait_for_daemon(instance, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster-daemon exited {proc.returncode}: {log.read_text()[-3000:]}")
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
        message = (e.dagster_event.message if e.dagster_event else None) or ""
        name = {"PIPELINE_STARTING": "dequeued_s", "PIPELINE_START": "started_s",
                "PIPELINE_SUCCESS": "ended_s"}.get(kind)
        if kind == "ENGINE_EVENT" and message.startswith("Launched run worker"):
            name = "forked_s"  # the project's launcher has forked the run's process from its warm parent
        if kind == "ENGINE_EVENT" and message.startswith("Started process for run"):
            name = "worker_s"  # the run's process is running: the job is loaded next
        if name and name not in marks:
            marks[name] = round(e.timestamp - created, 3)
    return marks


def _launched_seconds(env: dict[str, str], workspace: Path, instance, episode: str = EPISODE, timeout: float = 900
                      ) -> tuple[float, dict[str, float]]:
    """Submit the season job for the episode (as the UI's Materialize does), wait for its end;
    the run's own record gives creation and end times."""
    before = {r.run_id for r in instance.get_runs()}
    subprocess.run([str(Path(sys.executable).with_name("dagster")), "job", "launch", "-w", str(workspace),
                    "-j", f"{SERIES}__season", "--tags", f'{{"dagster/partition": "{episode}"}}'],
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


def measure_launched(base: Path, panels: int, warm_workers: bool = True
                     ) -> tuple[tuple[float, dict], tuple[float, dict], tuple[float, dict]]:
    """(the daemon's first launch: the warm-up episode), (the episode, first time), (again, cached)."""
    from dagster import DagsterInstance

    project = base / "launched"
    layout = fresh_root(project, "data", panels, episodes=[EPISODE])
    (layout.root / "series" / SERIES / "episodes" / f"{WARMUP}.txt").write_text(long_episode(WARMUP_PANELS, WARMUP))
    home = _home(project, layout.root, warm_workers)
    workspace = project / "workspace.yaml"
    workspace.write_text("load_from:\n  - python_module:\n      module_name: webtoon_assets.definitions\n"
                         f"      working_directory: {REPO}\n      location_name: webtoon_assets\n")
    env = _env(layout.root, home)
    os.environ["DAGSTER_HOME"] = str(home)
    instance = DagsterInstance.from_config(str(home))
    instance.add_dynamic_partitions(f"{SERIES}__episodes", [WARMUP, EPISODE])
    # The daemon's output (and its runs' console logs) goes to a file: a pipe nobody reads fills up
    # and blocks the run writing to it (a 68-panel episode logs more than a pipe holds).
    log = (project / "daemon.log").open("w")
    daemon = subprocess.Popen([str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(workspace)],
                              env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        _wait_for_daemon(instance, daemon, project / "daemon.log")
        warmup = _launched_seconds(env, workspace, instance, WARMUP)
        first = _launched_seconds(env, workspace, instance)
        cached = _launched_seconds(env, workspace, instance)
    finally:
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        instance.dispose()
    return warmup, first, cached


def measure_in_process(base: Path, panels: int) -> tuple[float, float]:
    """The same runs in this process (the project already imported, as in ``webtoon demo``): the
    warm-up episode first, as on the daemon, then the episode twice."""
    from dagster import DagsterInstance

    project = base / "in-process"
    layout = fresh_root(project, "data", panels, episodes=[EPISODE])
    (layout.root / "series" / SERIES / "episodes" / f"{WARMUP}.txt").write_text(long_episode(WARMUP_PANELS, WARMUP))
    home = _home(project, layout.root)
    saved = dict(os.environ)
    os.environ.update(_env(layout.root, home))
    try:
        from webtoon_assets.definitions import build_definitions

        instance = DagsterInstance.from_config(str(home))
        instance.add_dynamic_partitions(f"{SERIES}__episodes", [WARMUP, EPISODE])
        job = build_definitions(layout).resolve_job_def(f"{SERIES}__season")
        job.execute_in_process(instance=instance, partition_key=WARMUP)
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


def measure(base: Path, panels: int = 68, warm_workers: bool = True) -> list[Row]:
    in_first, in_cached = measure_in_process(base, panels)
    (ui_warmup, warmup_phases), (ui_first, first_phases), (ui_cached, cached_phases) = measure_launched(
        base, panels, warm_workers)
    first_launch = {"daemon_first_launch": {"episode_panels": WARMUP_PANELS, "seconds": round(ui_warmup, 3),
                                            **warmup_phases}}
    how = "" if warm_workers else " (Dagster's default run worker: warm_run_workers off)"
    return [Row(f"episode of {panels} panels launched from the UI (daemon), fully cached{how}",
                "the same run in-process", in_cached, ui_cached, goal=GOAL, extra=cached_phases),
            Row(f"episode of {panels} panels launched from the UI (daemon), first time offline{how}",
                "the same run in-process", in_first, ui_first, goal=GOAL, extra={**first_phases, **first_launch})]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--panels", type=int, default=68)
    p.add_argument("--no-warm-workers", action="store_true",
                   help="start each run's process the default way (the code server spawns it), for comparison")
    a = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="webtoon-bench-"))
    try:
        rows = measure(base, a.panels, warm_workers=not a.no_warm_workers)
        print(table(rows))
        for r in rows:
            print(r.what, r.extra)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
