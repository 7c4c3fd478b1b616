"""Runs whose process is gone: find them, end them, and free the pool slots they hold.

A run killed with SIGKILL (or lost with its machine's power) never reports its end: Dagster keeps
it STARTED, and the steps it had in the ``image_generation`` pool keep their slots, so every later
run waits for a slot forever. Two paths clean this up:

- With the daemon (``make ui``): Dagster's run monitoring (``run_monitoring:`` in dagster.yaml) asks
  the run launcher, :class:`LocalRunLauncher`, whether each started run's worker is alive; a dead one
  is marked failed, and its slots are freed ``free_slots_after_run_end_seconds`` later.
- Without it (``webtoon demo``): :func:`recover_runs` at start-up, and again whenever a run of ours is
  waiting for a slot that a run whose process is gone holds (:func:`execute_run`).

The process of a run is found from the run's tags (``webtoon/host``, ``webtoon/pid``, set by
:func:`execute_run` when it creates the run) or the engine events that name it ("Launched run worker
(pid: N)" from :class:`LocalRunLauncher`, Dagster's "Started process for run (pid: N)" from a launched
run worker, "Executing steps in process (pid: N)" from an in-process run). A run with no recorded
process is never touched, nor one whose process is alive, nor one on another host. A pid alive but
started after the run was recorded belongs to a newer process (the pid was reused): the run's own
process is gone.

Runs launched from the UI (the daemon's run queue) start in warm run workers: :class:`LocalRunLauncher`
forks each run's process from a parent that has already imported Dagster and the heavy libraries
(``webtoon_assets.run_workers``), instead of asking the code server for a fresh interpreter.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, Field, MetadataValue, RunsFilter
from dagster._core.events import EngineEventData, JobFailureData, RunFailureReason
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus
from dagster._core.launcher.base import LaunchRunContext
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._core.utils import make_new_run_id
from dagster._serdes import ConfigurableClassData, serialize_value
from filelock import FileLock

from webtoon_assets.liveness import HOST, pid_alive
from webtoon_assets.run_workers import PRELOAD, WarmParent, WarmParentUnavailable

RUN_HOST_TAG = "webtoon/host"
RUN_PID_TAG = "webtoon/pid"
PARTITION_TAG = "dagster/partition"
LAUNCHED_WORKER = "Launched run worker"  # LocalRunLauncher's event, as it forks a run's process
# Engine events that name the process running a run: ours, and Dagster 1.13's.
_PID_EVENT = re.compile(rf"^({LAUNCHED_WORKER}|Started process for run|Started process for resuming job|"
                        r"Executing steps in process|Executing steps using multiprocess executor: parent process) "
                        r"\(pid: (\d+)\)")
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", HOST})
# The events that name a process started for the run alone (which terminate may signal).
RUN_WORKER_SOURCES = (LAUNCHED_WORKER, "Started process for run", "Started process for resuming job")
TERMINATE_GRACE_SECONDS = 60.0  # a terminated run's worker that is still running after this is killed
START_SLACK_SECONDS = 2.0  # /proc start times are exact to the second of the boot time
WAIT_MESSAGE_EVERY_SECONDS = 60.0

Log = Callable[[str], None]


def say(message: str) -> None:
    print(message, flush=True)


# -- is the run's process alive? ------------------------------------------------------------------

@dataclass(frozen=True)
class RunProcess:
    host: str
    pid: int
    since: float | None  # when the run recorded it: the process had started by then
    source: str

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"


@lru_cache(maxsize=1)
def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def _proc_stat(pid: int) -> tuple[str, float | None] | None:
    """(state, start time) of a process from /proc, or None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    boot = _boot_time()
    started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK") if boot is not None else None
    return fields[0], started if _start_times_trusted() else None


@lru_cache(maxsize=1)
def _start_times_trusted() -> bool:
    """Start times are used only if this process's own start time is plausible (a time namespace
    or a clock step would make them misleading; then a reused pid counts as alive)."""
    try:
        fields = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
        boot = _boot_time()
        return boot is not None and boot + int(fields[19]) / os.sysconf("SC_CLK_TCK") <= time.time() + 1
    except (OSError, IndexError, ValueError):
        return False


def process_alive(pid: int, since: float | None = None) -> bool:
    """Is ``pid`` a live process on this host that had started by ``since``? A zombie is dead."""
    if pid <= 0 or not pid_alive(pid):
        return False
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, started = stat
    if state in ("Z", "X"):
        return False
    return not (since is not None and started is not None and started > since + START_SLACK_SECONDS)


def run_process(instance: DagsterInstance, run: DagsterRun, sources: Iterable[str] | None = None
                ) -> RunProcess | None:
    """The process that runs ``run``, as the run recorded it, or None if it recorded none (yet).
    ``sources``: only a process named by those events (e.g. RUN_WORKER_SOURCES)."""
    tags = run.tags
    if sources is None and tags.get(RUN_PID_TAG, "").isdigit():
        record = instance.get_run_record_by_id(run.run_id)
        since = record.create_timestamp.timestamp() if record else None
        return RunProcess(tags.get(RUN_HOST_TAG, HOST), int(tags[RUN_PID_TAG]), since, "run tags")
    wanted = None if sources is None else set(sources)
    found = None
    for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT):
        message = entry.dagster_event.message if entry.dagster_event else entry.user_message
        if message and (m := _PID_EVENT.match(message)) and (wanted is None or m[1] in wanted):
            found = (int(m[2]), entry.timestamp, m[1])  # the latest: a resumed run has a new process
    if found is None:
        return None
    # No host in Dagster's events: the instance is a local SQLite database, so its runs ran here,
    # unless the run launcher said otherwise.
    return RunProcess(tags.get(RUN_HOST_TAG, HOST), found[0], found[1], found[2])


def process_gone(proc: RunProcess) -> bool:
    """Only a process on this host can be checked; elsewhere it counts as alive."""
    return proc.host == HOST and not process_alive(proc.pid, proc.since)


def describe(run: DagsterRun) -> str:
    part = run.tags.get(PARTITION_TAG)
    return f"{run.job_name}{' ' + part if part else ''}, run {run.run_id[:8]}"


# -- ending dead runs and freeing their slots -----------------------------------------------------

def _lock(instance: DagsterInstance) -> FileLock:
    root = Path(instance.root_directory)
    root.mkdir(parents=True, exist_ok=True)
    return FileLock(root / ".recovery.lock")


def end_dead_runs(instance: DagsterInstance, run_ids: Iterable[str] | None = None, log: Log = say) -> list[str]:
    """Mark failed (canceled, if it was canceling) every unfinished run whose process is gone."""
    ids = None if run_ids is None else list(run_ids)
    if ids == []:
        return []
    statuses = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED,
                DagsterRunStatus.CANCELING]
    ended = []
    for record in instance.get_run_records(RunsFilter(statuses=statuses, run_ids=ids)):
        run = record.dagster_run
        if run.status == DagsterRunStatus.NOT_STARTED and RUN_PID_TAG not in run.tags:
            continue  # queued for a launcher: the daemon's start timeout is for these
        proc = run_process(instance, run)
        if proc is None or not process_gone(proc):
            continue
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.is_finished:
            continue
        message = (f"The process running this run ({proc}, from the {proc.source}) is gone: it was killed or "
                   f"crashed. Marked {'canceled' if current.status == DagsterRunStatus.CANCELING else 'failed'} "
                   "by webtoon; the pool slots it held are freed.")
        if current.status == DagsterRunStatus.CANCELING:
            instance.report_run_canceled(current, message)
        else:
            instance.report_run_failed(current, message, JobFailureData(
                error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION))
        log(f"webtoon: ended {describe(current)}: its process ({proc}) is gone")
        ended.append(run.run_id)
    return ended


def slot_holders(instance: DagsterInstance) -> dict[str, set[str]]:
    """Run ids holding or waiting for a slot, by pool."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return {}
    infos = storage.get_concurrency_infos(sorted(storage.get_concurrency_keys()))
    return {key: {s.run_id for s in info.claimed_slots} | {p.run_id for p in info.pending_steps}
            for key, info in infos.items()}


def free_finished_slots(instance: DagsterInstance, run_ids: Iterable[str] | None = None, log: Log = say
                        ) -> list[str]:
    """Free the slots (and queued claims) of runs that are finished, or no longer exist."""
    holders = set().union(*slot_holders(instance).values())
    if run_ids is not None:
        holders &= set(run_ids)
    freed = []
    for run_id in sorted(holders):
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
            log(f"webtoon: freed the pool slots of {describe(run) if run else 'run ' + run_id[:8]}"
                f" ({run.status.value.lower() if run else 'deleted'})")
            freed.append(run_id)
    return freed


def recover_runs(instance: DagsterInstance, run_ids: Iterable[str] | None = None, log: Log = say) -> list[str]:
    """End the runs whose process is gone and free every slot a finished run still holds (all runs,
    or only ``run_ids``). Serialised across processes; returns the run ids ended or freed."""
    ids = None if run_ids is None else list(run_ids)
    with _lock(instance):
        ended = end_dead_runs(instance, ids, log)
        freed = free_finished_slots(instance, ids, log)
    return ended + [r for r in freed if r not in ended]


# -- running a job in this process ------------------------------------------------------------------

def process_tags() -> dict[str, str]:
    return {RUN_HOST_TAG: HOST, RUN_PID_TAG: str(os.getpid())}


class PoolWaitWatcher:
    """While a run executes, say when one of its steps waits for a pool slot, and by whom the slots
    are held; end holders whose process is gone, so the wait does not last forever."""

    def __init__(self, instance: DagsterInstance, run_id: str, label: str, log: Log = say,
                 poll_seconds: float = 1.0):
        self.instance, self.run_id, self.label, self.log, self.poll = instance, run_id, label, log, poll_seconds
        self._stop = threading.Event()
        self._said: dict[tuple[str, str], float] = {}
        self._thread = threading.Thread(target=self._loop, name=f"pool-wait-{run_id[:8]}", daemon=True)

    def __enter__(self) -> "PoolWaitWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - watching must never break the run it watches
                continue

    def check(self) -> None:
        storage = self.instance.event_log_storage
        if not storage.supports_global_concurrency_limits:
            return
        infos = storage.get_concurrency_infos(sorted(storage.get_concurrency_keys()))
        for pool, info in infos.items():
            waiting = [p.step_key for p in info.pending_steps if p.run_id == self.run_id and p.assigned_timestamp is None]
            if not waiting:
                continue
            holders = sorted({s.run_id for s in info.claimed_slots if s.run_id != self.run_id}
                             | {p.run_id for p in info.pending_steps
                                if p.run_id != self.run_id and p.assigned_timestamp is not None})
            if holders and recover_runs(self.instance, holders, self.log):
                continue  # slots were freed: the step gets one on its next try
            for step in waiting:
                said = self._said.get((pool, step))
                if said is not None and time.monotonic() - said < WAIT_MESSAGE_EVERY_SECONDS:
                    continue
                self._said[(pool, step)] = time.monotonic()
                self.log(f"{self.label}: step {step} is {'still ' if said else ''}waiting for a slot in pool "
                         f"'{pool}' ({len(info.claimed_slots)} of {info.limit} in use by: "
                         f"{self._holders(holders)})")

    def _holders(self, run_ids: list[str]) -> str:
        parts = []
        for run_id in run_ids:
            run = self.instance.get_run_by_id(run_id)
            if run is None:
                parts.append(f"run {run_id[:8]} (deleted)")
                continue
            proc = run_process(self.instance, run)
            parts.append(f"{describe(run)} ({run.status.value.lower()}{', ' + str(proc) if proc else ''})")
        return "; ".join(parts) or "no run"


def execute_run(job: Any, instance: DagsterInstance, label: str, log: Log = say, **kwargs: Any) -> Any:
    """``job.execute_in_process`` on ``instance``, with this process's host and pid as run tags (so
    a later start-up can tell the run died with it) and a watcher that says when a step waits for a
    pool slot. Returns the ``ExecuteInProcessResult``."""
    run_id = kwargs.pop("run_id", None) or make_new_run_id()
    tags = {**(kwargs.pop("tags", None) or {}), **process_tags()}
    with PoolWaitWatcher(instance, run_id, label, log):
        return job.execute_in_process(instance=instance, run_id=run_id, tags=tags, **kwargs)


# -- the daemon's side: a run launcher with warm run workers, that can tell whether they are alive --

class LocalRunLauncher(DefaultRunLauncher):
    """The project's run launcher (dagster.yaml ``run_launcher:``), in the process that launches runs
    (the daemon's run queue; the webserver without one).

    - Each run starts in a process of its own, forked from the launcher's warm parent (started on
      the first launch, see ``webtoon_assets.run_workers``), which has imported Dagster and the heavy
      libraries but never the project: the worker imports the project fresh, loads the job from the
      run's code origin and executes it as ``dagster api execute_run`` does. "Launched run worker
      (pid: N)" is recorded as the fork returns; Dagster's "Started process for run (pid: N)" follows.
    - A run that cannot start warm (no Python code origin, another Python, a container image, a code
      server on another host, warm workers off, or the warm parent failing) starts the default way,
      in a process the code server spawns; the reason is an engine event of the run.
    - ``terminate`` sends the worker SIGINT, which Dagster's run worker turns into a clean cancel at its
      next step boundary (the run ends CANCELED); a worker that is gone, or still running
      ``TERMINATE_GRACE_SECONDS`` later (then SIGKILLed), has its run marked canceled here.
      Runs started by a code server are terminated through it, as by Dagster's launcher.
    - Run monitoring's health check: a started run whose worker process is gone is reported FAILED.

    Workers outlive the launcher: when the daemon stops, its warm parent exits and the runs go on to
    their end (their parent becomes init). A restarted daemon starts a new warm parent; the runs of
    the old one are still terminated and checked, by the pid their events record. A worker that dies
    with its run unfinished is caught by the health check, as any other.
    """

    def __init__(self, inst_data: ConfigurableClassData | None = None, warm_run_workers: bool = True,
                 preload: Sequence[str] = ()):
        super().__init__(inst_data=inst_data)
        self.warm_run_workers = warm_run_workers
        self.preload = tuple(preload)
        self._warm: WarmParent | None = None
        self._warm_lock = threading.Lock()

    @classmethod
    def config_type(cls) -> dict:
        return {
            "warm_run_workers": Field(bool, is_required=False, default_value=True,
                                      description="Fork each run's process from a warm parent (else: the code server "
                                                  "spawns it, Dagster's default)."),
            "preload": Field([str], is_required=False, default_value=[],
                             description="Modules the warm parent imports besides its own list (never the project's)."),
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> "LocalRunLauncher":
        return cls(inst_data=inst_data, warm_run_workers=config_value.get("warm_run_workers", True),
                   preload=config_value.get("preload") or ())

    # -- launching ----------------------------------------------------------------------------------

    @property
    def warm_parent(self) -> WarmParent:
        with self._warm_lock:
            if self._warm is None:
                self._warm = WarmParent((*PRELOAD, *self.preload))
            return self._warm

    def why_not_warm(self, run: DagsterRun) -> str | None:
        """Why ``run`` cannot start in a warm worker, or None if it can."""
        if not self.warm_run_workers:
            return "warm_run_workers is off in the run launcher's config"
        if not hasattr(os, "fork"):
            return "this platform cannot fork"
        origin = run.job_code_origin
        if origin is None:
            return "the run has no Python code origin"
        repo = origin.repository_origin
        if repo.container_image:
            return f"its code location runs in the container image {repo.container_image}"
        if os.path.abspath(repo.executable_path) != os.path.abspath(sys.executable):
            return f"its code location runs {repo.executable_path}, not this launcher's {sys.executable}"
        remote = run.remote_job_origin
        location = remote.repository_origin.code_location_origin if remote is not None else None
        # A grpc_server location (`dagster dev` serves its code locations so) on this machine runs the
        # code origin above with this Python; one on another host may not even have these files.
        if (isinstance(location, GrpcServerCodeLocationOrigin) and not location.socket
                and location.host not in LOCAL_HOSTS):
            return f"its code server is on another host ({location.host})"
        return None

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        self._instance.add_run_tags(run.run_id, {RUN_HOST_TAG: HOST})
        why = self.why_not_warm(run)
        if why is None:
            try:
                pid, parent = self.warm_parent.start_run(run.run_id, serialize_value(self._instance.get_ref()))
            except WarmParentUnavailable as exc:  # nothing was forked: the default way is safe
                why = str(exc)
            else:  # (any other error propagates: a worker may exist, so none other is started)
                self._instance.report_engine_event(
                    f"{LAUNCHED_WORKER} (pid: {pid}) on {HOST}, forked from the warm parent (pid: {parent}).", run,
                    EngineEventData(metadata={"pid": MetadataValue.text(str(pid)),
                                              "warm parent pid": MetadataValue.text(str(parent))}))
                self._run_ids.add(run.run_id)
                return
        self._instance.report_engine_event(f"Not starting a warm run worker: {why}. The code server starts it.",
                                           run)
        super().launch_run(context)

    def dispose(self) -> None:
        """The warm parent exits; the runs it started go on."""
        with self._warm_lock:
            warm, self._warm = self._warm, None
        if warm is not None:
            warm.stop()
        super().dispose()

    # -- terminating --------------------------------------------------------------------------------

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if not run or run.is_finished:
            return False
        if GRPC_INFO_TAG in run.tags or RUN_PID_TAG in run.tags:
            # Started by a code server (the fallback): it is asked. Run by some other program in its
            # own process (``webtoon demo``, a test): not ours to signal; Dagster's launcher cannot either.
            return super().terminate(run_id)
        proc = run_process(self._instance, run, RUN_WORKER_SOURCES)  # a process started for this run alone
        if run.status != DagsterRunStatus.CANCELING:
            self._instance.report_run_canceling(run)
        if proc is None or proc.host != HOST:
            self._instance.report_engine_event(
                "Cannot terminate: " + ("no run worker is recorded for this run" if proc is None
                                        else f"its run worker ({proc}) is on another host"), run)
            return False
        try:
            if process_gone(proc):
                raise ProcessLookupError
            os.kill(proc.pid, signal.SIGINT)  # Dagster's run worker: a clean cancel (SIGTERM is the same)
        except ProcessLookupError:
            self._mark_canceled(run_id, f"Its run worker ({proc}) had already exited: marked canceled.")
            return True
        except PermissionError as exc:
            self._instance.report_engine_event(f"Cannot terminate the run worker ({proc}): {exc}", run)
            return False
        threading.Thread(target=self._see_terminated, args=(run_id, proc), name=f"terminate-{run_id[:8]}",
                         daemon=True).start()
        return True

    def _see_terminated(self, run_id: str, proc: RunProcess) -> None:
        """A terminated worker ends its run itself; if it exits without doing so, or does not exit
        within the grace period (then it is killed), the run is marked canceled here."""
        deadline = time.monotonic() + TERMINATE_GRACE_SECONDS
        try:
            while time.monotonic() < deadline:
                run = self._instance.get_run_by_id(run_id)
                if run is None or run.is_finished:
                    return
                if process_gone(proc):
                    time.sleep(1.0)  # its last events may still be on their way
                    self._mark_canceled(run_id, f"Its run worker ({proc}) exited without ending the run: "
                                                "marked canceled.")
                    return
                time.sleep(0.25)
            if not process_gone(proc):
                os.kill(proc.pid, signal.SIGKILL)
            self._mark_canceled(run_id, f"Its run worker ({proc}) was still running {TERMINATE_GRACE_SECONDS:g} s "
                                        "after it was asked to stop: killed, marked canceled.")
        except Exception:  # noqa: BLE001 - run monitoring's cancel timeout is the backstop
            return

    def _mark_canceled(self, run_id: str, message: str) -> None:
        run = self._instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            self._instance.report_run_canceled(run, message)

    # -- run monitoring ---------------------------------------------------------------------------

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        proc = run_process(self._instance, run)
        if proc is None:  # nothing recorded yet: cannot tell, so never condemn
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no run worker recorded yet")
        if process_gone(proc):
            return CheckRunHealthResult(WorkerStatus.FAILED, f"the run worker ({proc}) is gone: killed or crashed",
                                        run_worker_id=str(proc.pid))
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker {proc} is alive", run_worker_id=str(proc.pid))

    def get_run_worker_debug_info(self, run: DagsterRun, include_container_logs: bool | None = True) -> str | None:
        proc = run_process(self._instance, run)
        if proc is None:
            return "No run worker recorded for this run."
        return f"Run worker: {proc} (from the {proc.source}), {'gone' if process_gone(proc) else 'alive'}."


def start_up(instance: DagsterInstance, data_root: Path, log: Log = say) -> None:
    """What a daemonless entry point (``webtoon demo``) does before its first run: end the runs a
    killed process left started, free the slots they (or finished runs) still hold, and remove the
    temp files killed writers left under the data root."""
    from webtoon_assets.temps import sweep_temp_files

    recover_runs(instance, log=log)
    swept = sweep_temp_files(data_root)
    if swept:
        log(f"webtoon: removed {len(swept)} temp file(s) left by killed writers under {data_root}")
