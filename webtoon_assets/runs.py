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
:func:`execute_run` when it creates the run) or Dagster's own engine events ("Started process for
run (pid: N)" from a launched run worker, "Executing steps in process (pid: N)" from an in-process
run). A run with no recorded process is never touched, nor one whose process is alive, nor one
on another host. A pid alive but started after the run was recorded belongs to a newer process
(the pid was reused): the run's own process is gone.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.events import JobFailureData, RunFailureReason
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus
from dagster._core.launcher.base import LaunchRunContext
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.utils import make_new_run_id
from filelock import FileLock

from webtoon_assets.liveness import HOST, pid_alive

RUN_HOST_TAG = "webtoon/host"
RUN_PID_TAG = "webtoon/pid"
PARTITION_TAG = "dagster/partition"
# Engine events that name the process running a run, in Dagster 1.13.
_PID_EVENT = re.compile(r"^(Started process for run|Started process for resuming job|Executing steps in process|"
                        r"Executing steps using multiprocess executor: parent process) \(pid: (\d+)\)")
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


def run_process(instance: DagsterInstance, run: DagsterRun) -> RunProcess | None:
    """The process that runs ``run``, as the run recorded it, or None if it recorded none (yet)."""
    tags = run.tags
    if tags.get(RUN_PID_TAG, "").isdigit():
        record = instance.get_run_record_by_id(run.run_id)
        since = record.create_timestamp.timestamp() if record else None
        return RunProcess(tags.get(RUN_HOST_TAG, HOST), int(tags[RUN_PID_TAG]), since, "run tags")
    found = None
    for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT):
        message = entry.dagster_event.message if entry.dagster_event else entry.user_message
        if message and (m := _PID_EVENT.match(message)):
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


# -- the daemon's side: a run launcher that can tell whether a run's worker is alive ----------------

class LocalRunLauncher(DefaultRunLauncher):
    """Dagster's default launcher (runs start in the code server's process on this machine), plus
    the health check run monitoring needs: a run whose worker process is gone is reported FAILED,
    and the monitoring daemon marks it failed. Configured in dagster.yaml (``run_launcher:``)."""

    def launch_run(self, context: LaunchRunContext) -> None:
        self._instance.add_run_tags(context.dagster_run.run_id, {RUN_HOST_TAG: HOST})
        super().launch_run(context)

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


def start_up(instance: DagsterInstance, data_root: Path, log: Log = say) -> None:
    """What a daemonless entry point (``webtoon demo``) does before its first run: end the runs a
    killed process left started, free the slots they (or finished runs) still hold, and remove the
    temp files killed writers left under the data root."""
    from webtoon_assets.temps import sweep_temp_files

    recover_runs(instance, log=log)
    swept = sweep_temp_files(data_root)
    if swept:
        log(f"webtoon: removed {len(swept)} temp file(s) left by killed writers under {data_root}")
