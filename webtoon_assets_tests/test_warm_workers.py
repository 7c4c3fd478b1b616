"""Warm run workers (webtoon_assets.run_workers, LocalRunLauncher): a launched run runs in a process of
its own, forked from the launcher's warm parent; it sees the code as it is now; terminating it cancels
it; a killed one is failed by run monitoring; pools hold across them; a run that cannot start warm
starts the default way; the warm parent is replaced when its environment changes, and the runs it
started go on without it.

The runs are real: an instance made from the project's dagster.yaml in a temp home, runs created
with their Python code origin (a module in a temp folder, as a code location's) and launched with
``instance.launch_run``, as the daemon's run queue launches them (the warm path needs no workspace).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterRunStatus
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin

import webtoon_assets.run_workers as run_workers
from webtoon_assets.instance import open_instance, prepare_home
from webtoon_assets.liveness import HOST
from webtoon_assets.runs import (LAUNCHED_WORKER, RUN_HOST_TAG, RUN_PID_TAG, LocalRunLauncher, process_alive,
                                 run_process)

POOL = "image_generation"
MODULE = "warm_probe_defs"
VALUE_MODULE = "warm_probe_value"

DEFS = '''
import json, os, sys, time
from pathlib import Path

import dagster as dg

import warm_probe_value


def _probe(context):
    state = Path(context.op_config["state"])
    (state / f"{context.run_id}.json").write_text(json.dumps({
        "pid": os.getpid(), "value": warm_probe_value.VALUE,
        "project_modules": sorted(m for m in sys.modules if m.startswith("webtoon_assets"))}))
    deadline = time.monotonic() + 120
    while context.op_config["hold"] and not (state / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


CONFIG = {"state": str, "hold": dg.Field(bool, default_value=False)}


@dg.op(config_schema=CONFIG)
def probe(context):
    _probe(context)


@dg.op(config_schema=CONFIG, pool="image_generation")
def generate(context):
    _probe(context)


@dg.job(executor_def=dg.in_process_executor)
def probe_job():
    probe()


@dg.job(executor_def=dg.in_process_executor)
def pool_job():
    generate()


defs = dg.Definitions(jobs=[probe_job, pool_job])
'''


class Env:
    def __init__(self, base: Path):
        self.base, self.code, self.state = base, base / "code", base / "state"
        self.code.mkdir()
        self.state.mkdir()
        (self.code / f"{MODULE}.py").write_text(DEFS)
        self.set_value(1)
        sys.path.insert(0, str(self.code))
        self.repo = ReconstructableRepository.for_module(MODULE, "defs", working_directory=str(self.code))
        self.home = prepare_home(base / "home", base=base)

    def set_value(self, value: int) -> None:
        path = self.code / f"{VALUE_MODULE}.py"
        path.write_text(f"VALUE = {value!r}  # {'x' * value}\n")  # a new size: never a stale .pyc
        os.utime(path, (time.time() + value, time.time() + value))

    def create_run(self, inst, job: str = "probe_job", hold: bool = False, origin: JobPythonOrigin | None = None,
                   **kwargs):
        recon = self.repo.get_reconstructable_job(job)
        op = "probe" if job == "probe_job" else "generate"
        return inst.create_run_for_job(
            job_def=recon.get_definition(), job_code_origin=origin or recon.get_python_origin(),
            run_config={"ops": {op: {"config": {"state": str(self.state), "hold": hold}}},
                        "loggers": {"console": {"config": {"log_level": "WARNING"}}}}, **kwargs)

    def launch(self, inst, **kwargs):
        run = self.create_run(inst, **kwargs)
        inst.launch_run(run.run_id, workspace=None)  # as the run queue does (the warm path needs no workspace)
        return run.run_id

    def probed(self, run_id: str) -> dict | None:
        path = self.state / f"{run_id}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = Env(tmp_path_factory.mktemp("warm"))
    try:
        yield e
    finally:
        (e.state / "release").touch()  # any run still holding ends
        sys.path.remove(str(e.code))
        for name in (MODULE, VALUE_MODULE):
            sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def instance(env):
    with open_instance(env.home) as instance:
        assert isinstance(instance.run_launcher, LocalRunLauncher)
        yield instance  # then disposed: the launcher's warm parent exits


@pytest.fixture
def inst(env, instance):
    (env.state / "release").unlink(missing_ok=True)
    yield instance
    (env.state / "release").touch()  # no run of this test holds on


def wait_for(condition, what: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def finished(inst, run_id: str, timeout: float = 90):
    return wait_for(lambda: (r := inst.get_run_by_id(run_id)).is_finished and r, f"run {run_id[:8]} to end", timeout)


def messages(inst, run_id: str, kind=DagsterEventType.ENGINE_EVENT) -> list[str]:
    return [e.dagster_event.message or "" for e in inst.all_logs(run_id, of_type=kind)]


def test_a_launched_run_runs_in_its_own_warm_process_and_sees_the_code_as_it_is_now(env, inst):
    launcher: LocalRunLauncher = inst.run_launcher
    first = env.launch(inst)
    assert finished(inst, first).status == DagsterRunStatus.SUCCESS, messages(inst, first)
    probed = env.probed(first)
    parent = launcher.warm_parent.pid
    assert probed["value"] == 1 and probed["pid"] not in (os.getpid(), parent)
    # The worker's pid is recorded: by the launcher as it forks, and by Dagster's run worker.
    said = messages(inst, first)
    launched = f"{LAUNCHED_WORKER} (pid: {probed['pid']})"
    assert any(m.startswith(launched) and f"(pid: {parent})" in m for m in said), (said, parent)
    assert f"Started process for run (pid: {probed['pid']})." in said
    assert run_process(inst, inst.get_run_by_id(first)).pid == probed["pid"]
    # The warm parent has Dagster, and neither the project nor the code location's modules.
    ping = launcher.warm_parent.ping([MODULE, VALUE_MODULE, "dagster", "numpy"])
    assert ping["project_modules"] == [] and ping["imported"] == ["dagster", "numpy"]
    hello = launcher.warm_parent.hello
    assert hello["project_modules"] == [] and hello["failed"] == {} and hello["migration_scripts"].startswith("cached")

    # A code change is seen by the next run, without restarting anything.
    env.set_value(2)
    second = env.launch(inst)
    assert finished(inst, second).status == DagsterRunStatus.SUCCESS
    assert env.probed(second)["value"] == 2 and launcher.warm_parent.pid == parent
    assert env.probed(second)["pid"] != probed["pid"]


def test_terminating_a_launched_run_cancels_it_and_ends_its_process(env, inst):
    run_id = env.launch(inst, hold=True)
    pid = wait_for(lambda: env.probed(run_id), "the run to start its step")["pid"]
    assert inst.run_launcher.terminate(run_id)
    run = finished(inst, run_id)
    assert run.status == DagsterRunStatus.CANCELED, messages(inst, run_id)
    assert messages(inst, run_id, DagsterEventType.RUN_CANCELED)  # the worker itself ended it
    wait_for(lambda: not process_alive(pid), "the worker to exit", 30)
    assert not inst.run_launcher.terminate(run_id)  # finished: nothing to do


def test_a_run_in_some_other_process_is_not_signalled(env, inst):
    """A run executed in-process by another program (``webtoon demo``; here, this test) names that
    process in its tags: terminate does not interrupt it (Dagster's launcher cannot terminate it either)."""
    interrupted = []
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    try:
        run = env.create_run(inst, status=DagsterRunStatus.STARTED,
                             tags={RUN_HOST_TAG: HOST, RUN_PID_TAG: str(os.getpid())})
        assert run_process(inst, run).pid == os.getpid()
        assert not inst.run_launcher.terminate(run.run_id)
        time.sleep(0.2)
        assert interrupted == []
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_killed_worker_is_failed_by_run_monitoring(env, inst):
    from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration

    from webtoon_assets_tests.test_crash_restart import _DaemonContext

    run_id = env.launch(inst, hold=True)
    pid = wait_for(lambda: env.probed(run_id), "the run to start its step")["pid"]
    assert inst.run_launcher.check_run_worker_health(inst.get_run_by_id(run_id)).status.value == "RUNNING"
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not process_alive(pid), "the worker to die", 30)
    health = inst.run_launcher.check_run_worker_health(inst.get_run_by_id(run_id))
    assert health.status.value == "FAILED" and f"pid {pid}" in health.msg
    errors = [e for e in execute_run_monitoring_iteration(_DaemonContext(inst), logging.getLogger("test")) if e]
    assert errors == []
    assert inst.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE


def test_pools_hold_across_warm_workers(env, inst):
    runs = [env.launch(inst, job="pool_job", hold=True) for _ in range(3)]
    wait_for(lambda: sum(env.probed(r) is not None for r in runs) == 2, "two runs to hold the pool's slots")
    waiting = wait_for(lambda: [r for r in runs if f"Step blocked by limit for pool {POOL}" in messages(inst, r)],
                       "the third run to wait for a slot")
    assert len(waiting) == 1 and env.probed(waiting[0]) is None
    assert len(inst.event_log_storage.get_concurrency_info(POOL).claimed_slots) == 2
    (env.state / "release").touch()
    assert [finished(inst, r).status for r in runs] == [DagsterRunStatus.SUCCESS] * 3


def test_a_run_that_cannot_start_warm_starts_the_default_way(env, inst):
    recon = env.repo.get_reconstructable_job("probe_job")
    origin = recon.get_python_origin()
    repo = origin.repository_origin
    elsewhere = JobPythonOrigin(origin.job_name, RepositoryPythonOrigin(
        executable_path="/elsewhere/bin/python", code_pointer=repo.code_pointer, container_image=None,
        entry_point=repo.entry_point, container_context=None))
    run = env.create_run(inst, origin=elsewhere)
    assert "/elsewhere/bin/python" in inst.run_launcher.why_not_warm(run)
    # A code server on this machine (as `dagster dev` runs them) is fine; one on another host is not.
    local = env.create_run(inst)
    for location, why in ((GrpcServerCodeLocationOrigin(host="localhost", port=4000), None),
                          (GrpcServerCodeLocationOrigin(host="", socket="/tmp/grpc.sock"), None),
                          (GrpcServerCodeLocationOrigin(host="build-box", port=4000), "on another host (build-box)")):
        remote = RemoteJobOrigin(RemoteRepositoryOrigin(location, "repo"), "probe_job")
        served = local._replace(remote_job_origin=remote)
        reason = inst.run_launcher.why_not_warm(served)
        assert reason == why or (why and why in reason), reason
    assert inst.run_launcher.why_not_warm(local._replace(job_code_origin=None)) == "the run has no Python code origin"
    # The default way needs the code server, from a workspace: there is none here, so it fails loudly.
    with pytest.raises(Exception, match="requires a workspace"):
        inst.launch_run(run.run_id, workspace=None)
    assert any(m.startswith("Not starting a warm run worker: its code location runs /elsewhere/bin/python")
               for m in messages(inst, run.run_id))
    assert inst.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE


def test_the_warm_parent_is_replaced_when_packages_change_and_its_runs_go_on(env, inst):
    launcher: LocalRunLauncher = inst.run_launcher
    holding = env.launch(inst, hold=True)
    worker = wait_for(lambda: env.probed(holding), "the run to start its step")["pid"]
    old = launcher.warm_parent.pid
    stamp = run_workers.environment_stamp()
    assert launcher.warm_parent._stamp == stamp
    assert any(path.endswith("site-packages") for path, _ in stamp) and any(p.endswith("uv.lock") for p, _ in stamp)
    # As if a package had been installed since the warm parent started (site-packages changed):
    launcher.warm_parent._stamp = (*stamp[:-1], (stamp[-1][0], stamp[-1][1] - 1))
    env.set_value(3)
    run_id = env.launch(inst)
    assert finished(inst, run_id).status == DagsterRunStatus.SUCCESS
    assert launcher.warm_parent.pid not in (None, old) and env.probed(run_id)["value"] == 3
    wait_for(lambda: not process_alive(old), "the old warm parent to exit", 30)
    # The run the old parent started goes on without it, to its end.
    assert process_alive(worker) and inst.get_run_by_id(holding).status == DagsterRunStatus.STARTED
    (env.state / "release").touch()
    assert finished(inst, holding).status == DagsterRunStatus.SUCCESS


def test_runs_outlive_the_daemon_and_a_restarted_one_still_terminates_them(env, inst):
    """The daemon stops (its instance is disposed: the warm parent exits); its runs go on. A new
    daemon's launcher checks and terminates them by the pid their events record."""
    run_id = env.launch(inst, hold=True)
    worker = wait_for(lambda: env.probed(run_id), "the run to start its step")["pid"]
    parent = inst.run_launcher.warm_parent.pid
    inst.run_launcher.dispose()  # as at the daemon's exit
    wait_for(lambda: not process_alive(parent), "the warm parent to exit", 30)
    assert process_alive(worker)
    with open_instance(env.home) as restarted:
        launcher = restarted.run_launcher
        assert launcher is not inst.run_launcher
        assert launcher.check_run_worker_health(restarted.get_run_by_id(run_id)).status.value == "RUNNING"
        assert launcher.terminate(run_id)
        assert finished(restarted, run_id).status == DagsterRunStatus.CANCELED
        wait_for(lambda: not process_alive(worker), "the worker to exit", 30)
        assert launcher._warm is None  # terminating needs no warm parent


def test_the_warm_parent_program_never_imports_the_project():
    source = Path(run_workers.__file__).read_text()
    top = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert all(not line.split()[1].startswith(("webtoon_assets", "dagster")) for line in top), top
    assert all(not m.startswith("webtoon_assets") for m in run_workers.PRELOAD)
