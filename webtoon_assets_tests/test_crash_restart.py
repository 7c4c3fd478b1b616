"""Crash and restart: runs killed with SIGKILL never block later runs (their pool slots are freed,
live runs are left alone), a step waiting for a pool slot says so, concurrent first runs on a
brand-new instance all start, and killed writers leave no temp files for good.

The runs are real Dagster runs in their own processes (webtoon_assets_tests/run_worker.py) on an
instance configured by the project's dagster.yaml, in a temp DAGSTER_HOME."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter, build_init_resource_context

from webtoon_assets.resources import DataRootResource, GatewayResource, LocalProviderResource
from webtoon_assets.gateway.store import ImageStore
from webtoon_assets.instance import DEFAULT_HOME, open_instance, prepare_home
from webtoon_assets.paths import REPO_ROOT
from webtoon_assets.runs import LocalRunLauncher, recover_runs, run_process
from webtoon_assets.temps import HOST_TAG, sweep_temp_files, temp_path
from webtoon_assets_tests.conftest import SAMPLE
from webtoon_assets_tests.run_worker import fork_worker

POOL = "image_generation"


# -- helpers ----------------------------------------------------------------------------------------

def project_home(base: Path) -> Path:
    """A DAGSTER_HOME with the project's dagster.yaml, its paths resolved under ``base``."""
    return prepare_home(base / "home", base=base)


class Worker:
    """A run worker in its own process (forked from this one: Dagster is imported already)."""

    def __init__(self, home: Path, state: Path, name: str, *extra: str):
        self.proc = fork_worker(["--home", str(home), "--state", str(state), "--name", name, *extra],
                                state / f"{name}.out")
        self.pid = self.proc.pid

    def poll(self) -> int | None:
        return self.proc.exitcode

    def wait(self, timeout: float) -> int | None:
        self.proc.join(timeout)
        return self.proc.exitcode

    def kill(self) -> None:
        if self.proc.exitcode is None:
            self.proc.kill()  # SIGKILL
            self.proc.join(10)


worker = Worker


def output(state: Path, name: str) -> str:
    path = state / f"{name}.out"
    return path.read_text() if path.exists() else ""


def wait_for(condition, what: str, timeout: float = 60, procs: tuple = ()) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for p in procs:
            assert p.poll() is None, f"a worker exited ({p.poll()}) while waiting for {what}"
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def sigkill(proc) -> None:
    if isinstance(proc, subprocess.Popen):
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    else:
        proc.kill()
    assert proc.poll() == -signal.SIGKILL


def the_run(instance: DagsterInstance, name: str):
    runs = instance.get_runs(RunsFilter(job_name=f"hold_{name}"))
    assert len(runs) == 1, (name, runs)
    return runs[0]


def status(instance: DagsterInstance, name: str) -> DagsterRunStatus:
    return the_run(instance, name).status


def holders(instance: DagsterInstance) -> set[str]:
    return {s.run_id for s in instance.event_log_storage.get_concurrency_info(POOL).claimed_slots}


def failure_message(instance: DagsterInstance, name: str) -> str:
    events = instance.all_logs(the_run(instance, name).run_id, of_type=DagsterEventType.RUN_FAILURE)
    return " ".join(e.dagster_event.message or "" for e in events)


class _DaemonContext:
    """What Dagster's monitoring loop needs of the daemon's workspace (runs are never resumed here)."""

    def __init__(self, instance: DagsterInstance):
        self.instance = instance

    def create_request_context(self):
        return None


# -- 7. killed runs --------------------------------------------------------------------------------

def test_killed_runs_free_their_pool_slots_and_live_runs_are_left_alone(tmp_path):
    from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration

    home, state = project_home(tmp_path), tmp_path / "state"
    state.mkdir()
    procs: list[Worker] = []
    with open_instance(home):
        pass  # made here first, so the forked workers need not import Dagster's storage
    try:
        # W1 (a `webtoon demo`-style run, tagged with its pid) and W2 (a run started by other means:
        # its pid is only in Dagster's engine events) take both image_generation slots.
        w1, w2 = worker(home, state, "W1"), worker(home, state, "W2", "--untagged")
        procs += [w1, w2]
        wait_for(lambda: (state / "W1.holding").exists() and (state / "W2.holding").exists(), "W1, W2 to hold the slots",
                 procs=(w1, w2))
        with open_instance(home) as inst:
            assert isinstance(inst.run_launcher, LocalRunLauncher)
            r1, r2 = the_run(inst, "W1").run_id, the_run(inst, "W2").run_id
            assert holders(inst) == {r1, r2}
            assert run_process(inst, the_run(inst, "W2")).pid == w2.pid  # found from "Executing steps in process"

            # W3 waits for a slot, and says so: on its console, naming the holders, and in its run's log.
            w3 = worker(home, state, "W3")
            procs.append(w3)
            wait_for(lambda: "waiting for a slot in pool 'image_generation'" in output(state, "W3"), "W3 to say it waits",
                     procs=(w1, w2, w3))
            said = output(state, "W3")
            assert "2 of 2 in use by" in said and r1[:8] in said and r2[:8] in said and f"pid {w1.pid}" in said
            r3 = the_run(inst, "W3").run_id
            blocked = [e.dagster_event.message for e in inst.all_logs(r3, of_type=DagsterEventType.ENGINE_EVENT)]
            assert f"Step blocked by limit for pool {POOL}" in blocked

            # Every process is alive: nothing is touched.
            assert recover_runs(inst) == []
            assert [status(inst, n) for n in ("W1", "W2", "W3")] == [DagsterRunStatus.STARTED] * 3
            assert holders(inst) == {r1, r2}

            # W1 is killed while W3 waits: W3 ends it, frees its slot and takes it. W2 (alive) is untouched.
            sigkill(w1)
            wait_for(lambda: (state / "W3.holding").exists(), "W3 to get W1's slot", procs=(w2, w3))
            assert status(inst, "W1") == DagsterRunStatus.FAILURE
            assert f"pid {w1.pid}" in failure_message(inst, "W1") and "is gone" in failure_message(inst, "W1")
            assert status(inst, "W2") == DagsterRunStatus.STARTED
            assert holders(inst) == {r2, r3}

            # W2 is killed: Dagster's run monitoring (the daemon's loop, with the project's launcher)
            # fails it; W3, alive, is left alone.
            sigkill(w2)
            errors = [e for e in execute_run_monitoring_iteration(_DaemonContext(inst), logging.getLogger("test")) if e]
            assert errors == []
            assert status(inst, "W2") == DagsterRunStatus.FAILURE
            assert f"pid {w2.pid}" in failure_message(inst, "W2")
            assert status(inst, "W3") == DagsterRunStatus.STARTED
            assert holders(inst) == {r2, r3}  # a failed run still holds its slot until it is freed

            # W3 is killed too; the next run's start-up (as `webtoon demo` starts) ends W3, frees the
            # slots of W2 (failed) and W3, and the run completes.
            sigkill(w3)
            (state / "release").touch()
            w4 = worker(home, state, "W4", "--start-up", "--data-root", str(tmp_path / "data"))
            procs.append(w4)
            assert w4.wait(60) == 0, output(state, "W4")
            assert status(inst, "W3") == DagsterRunStatus.FAILURE and status(inst, "W4") == DagsterRunStatus.SUCCESS
            info = inst.event_log_storage.get_concurrency_info(POOL)
            assert info.claimed_slots == [] and info.pending_steps == []
            assert "ended hold_W3" in output(state, "W4") and "freed the pool slots of hold_W2" in output(state, "W4")
    finally:
        for p in procs:
            p.kill()


def test_the_daemon_runs_run_monitoring_with_the_projects_config(tmp_path):
    home = project_home(tmp_path)
    with open_instance(home) as inst:
        assert inst.run_monitoring_enabled and isinstance(inst.run_launcher, LocalRunLauncher)
        assert inst.run_launcher.supports_check_run_worker_health
        assert "MONITORING" in inst.get_required_daemon_types()
        settings = inst.run_monitoring_settings
        assert settings["max_resume_run_attempts"] == 0 and settings["free_slots_after_run_end_seconds"] > 0
        assert inst.run_monitoring_poll_interval_seconds <= 60
        assert Path(inst.root_directory) == tmp_path / "data" / "dagster"  # state under data/, absolute


def test_the_demo_starts_by_recovering(tmp_path, layout, monkeypatch):
    import webtoon_assets.demo as demo

    seen = []

    def start_up(instance, data_root, log=None):
        seen.append(data_root)
        raise RuntimeError("stop here")

    monkeypatch.setattr(demo, "start_up", start_up)
    with open_instance(project_home(tmp_path)) as inst, pytest.raises(RuntimeError, match="stop here"):
        demo.run_season(inst, None, layout, SAMPLE)
    assert seen == [layout.root]


# -- 8. first runs -------------------------------------------------------------------------------

def test_three_first_runs_on_a_brand_new_instance_all_succeed(tmp_path):
    """Three processes open a brand-new instance at the same moment and start a run, twice. Without
    the lock around the first open, a process crashes in the storage's migration ("table runs
    already exists", "UNIQUE constraint failed: alembic_version...") in nearly every round."""
    state, rounds = tmp_path / "state", 2
    state.mkdir()
    (state / "release").touch()  # each run's step returns at once
    with open_instance(project_home(tmp_path / "warm")):
        pass  # Dagster's storage modules are imported before the fork: the workers start at once
    homes = [project_home(tmp_path / f"i{i}") for i in range(rounds)]
    names = ("A", "B", "C")
    procs = [worker(homes[0], state, n, "--go", str(tmp_path / "go"), "--homes", ",".join(map(str, homes)))
             for n in names]
    try:
        wait_for(lambda: all((state / f"{n}.ready").exists() for n in names), "the workers to start", procs=procs)
        for i in range(rounds):
            (tmp_path / f"go.{i}").touch()
            wait_for(lambda: all((state / f"{n}.done.{i}").exists() for n in names), f"round {i}", timeout=90)
        for n, p in zip(names, procs):
            assert p.wait(30) == 0 and "crashed" not in output(state, n), output(state, n)
    finally:
        for p in procs:
            p.kill()
    for home in homes:
        with open_instance(home) as inst:
            runs = inst.get_runs()
            assert len(runs) == 3 and all(r.status == DagsterRunStatus.SUCCESS for r in runs)


# -- Dagster's own files stay out of the repository -------------------------------------------------

def test_the_instance_home_is_under_data_and_ignored_by_git():
    assert DEFAULT_HOME == REPO_ROOT / "data" / "dagster"
    for name in ("dagster.yaml", "logs/event.log", ".telemetry/id.yaml", ".nux/nux.yaml"):
        proc = subprocess.run(["git", "check-ignore", "-q", str(DEFAULT_HOME / name)], cwd=REPO_ROOT)
        assert proc.returncode == 0, f"{name} under DAGSTER_HOME is not git-ignored"
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "export DAGSTER_HOME := $(CURDIR)/data/dagster" in makefile


# -- 9. leftovers -----------------------------------------------------------------------------------

WRITER = """
import os, sys, time
from pathlib import Path
import webtoon_assets.files as files
from webtoon_assets.gateway.store import ImageStore
root = Path(sys.argv[1])
os.replace = lambda *a: (print('written', flush=True), time.sleep(600))  # stop between write and rename
store = ImageStore(root / 'store')
with store.staging('ab' + '0' * 62) as staged:
    files.write_text_atomic(root / 'out' / 'manifest.json', '{}')
"""


def temps_under(root: Path) -> set[Path]:
    return {p for p in root.rglob(".*") if p.is_file() and ".tmp" in p.name}


def test_a_killed_writers_temps_are_swept_and_a_live_ones_kept(tmp_path):
    dead_root, live_root = tmp_path / "dead", tmp_path / "live"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(root)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                text=True) for root in (dead_root, live_root)]
    try:
        for w in writers:
            assert w.stdout.readline().strip() == "written"
        dead, live = writers
        left = temps_under(dead_root)
        assert len(left) == 2 and all(f".{HOST_TAG}.{dead.pid}." in p.name for p in left)  # the staging file, the JSON
        sigkill(dead)
        assert set(sweep_temp_files(tmp_path)) == left
        assert temps_under(dead_root) == set()
        assert len(temps_under(live_root)) == 2  # its writer is alive: kept
        sigkill(live)
        assert len(sweep_temp_files(tmp_path)) == 2 and temps_under(tmp_path) == set()
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
                w.wait(10)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_old_temps_of_any_kind_go_after_a_day_and_nothing_else_is_touched(tmp_path):
    day_old = time.time() - 25 * 3600
    foreign_fresh = tmp_path / "out" / ".strip.png.otherhost.123.abcdef.tmp"
    foreign_old = tmp_path / "out" / ".panel.png.otherhost.124.abcdef.tmp"
    legacy_fresh = tmp_path / "out" / ".p01.png.tmp"
    legacy_old = [tmp_path / "out" / ".p02.png.tmp", tmp_path / ".webtoon.duckdb.4242.tmp",
                  tmp_path / "store" / "images" / "ab" / ".ab12cd34ef56-x1y2z3.png"]
    keep = [tmp_path / ".webtoon.duckdb.lock", tmp_path / "out" / "p01.png", tmp_path / "out" / ".hidden"]
    theirs = tmp_path / "dagster" / f".x.{HOST_TAG}.{dead_pid()}.abc.tmp"  # the instance's folder: not ours
    for p in [foreign_fresh, foreign_old, legacy_fresh, *legacy_old, *keep, theirs]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    for p in [foreign_old, *legacy_old, *keep]:
        os.utime(p, (day_old, day_old))
    assert set(sweep_temp_files(tmp_path)) == {foreign_old, *legacy_old}
    assert all(p.exists() for p in [foreign_fresh, legacy_fresh, *keep, theirs])


def test_publishing_twice_leaves_no_temp(tmp_path):
    store = ImageStore(tmp_path / "store")
    key = "cd" + "1" * 62
    store.image_path(key).parent.mkdir(parents=True)
    store.image_path(key).write_bytes(b"png")
    dest = tmp_path / "out" / "p01.png"
    store.publish(key, dest)
    store.publish(key, dest)  # a hard link onto itself: rename() would succeed and leave the temp
    assert sorted(p.name for p in dest.parent.iterdir()) == ["p01.png"]
    assert os.path.samefile(dest, store.image_path(key))
    dest.unlink()
    dest.write_bytes(b"other")  # a different file there: replaced by the stored image
    store.publish(key, dest)
    assert os.path.samefile(dest, store.image_path(key))
    assert sorted(p.name for p in dest.parent.iterdir()) == ["p01.png"]


def test_the_gateway_sweeps_at_set_up(layout):
    left = temp_path(layout.store / "images" / "ab" / "x.png")
    left = left.with_name(left.name.replace(f".{os.getpid()}.", f".{dead_pid()}."))
    left.parent.mkdir(parents=True, exist_ok=True)
    left.write_bytes(b"half an image")
    resource = GatewayResource(data=DataRootResource(data_dir=str(layout.root)), provider=LocalProviderResource())
    resource.setup_for_execution(build_init_resource_context())
    try:
        resource._open()  # the library starts (and sweeps) on a step's first generation
        assert not left.exists()
    finally:
        resource.teardown_after_execution(build_init_resource_context())
