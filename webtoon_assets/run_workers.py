"""Run workers that start warm: each launched run in a process of its own, forked from a long-lived
parent that has already imported Dagster and the heavy libraries the project uses.

Dagster's default launcher asks the code server to start a run, and the code server starts a fresh
interpreter (``spawn``) that imports Dagster (~2.5 s), then the project, then loads the job: most of a
cached episode's time when launched from the UI. Here the process that launches runs (the daemon, or
the webserver without a run queue) owns a *warm parent*, started on its first launch:
``python -P webtoon_assets/run_workers.py FD`` imports the modules of :data:`PRELOAD` (and reads
Dagster's migration scripts once, see :func:`_cache_migration_scripts`), then waits for requests on a
socket. For each run it forks a child, the run's own process (~0.1 s to its first event), which:

- takes the launcher's working directory and environment at the moment of the launch;
- imports the project fresh, because the warm parent never imports ``webtoon_assets`` (not this
  file either: it runs as a script): a code change, reloaded in the UI or not, is never run stale;
- executes the run as ``dagster api execute_run`` does (Dagster's ``_execute_run_command_body``: the
  job reconstructed from the run's code origin, "Started process for run (pid: N)", the run's events),
  with Dagster's interrupt handling: SIGINT or SIGTERM cancels the run cleanly at the next step
  boundary (they are blocked from the fork until the handler is in place, so an early one waits).

The warm parent exits when its launcher closes the socket (the launcher's process ends or disposes of
it); the runs it forked go on (their parent becomes init) and record their end themselves. It is
replaced when what it imported may have changed: the Python executable, its site-packages, the
project's ``uv.lock``, or this file (:func:`environment_stamp`, checked at every launch). A change
inside an installed package that touches none of those (an edit in place) needs a daemon restart.

This file imports only the standard library at its top: it is the warm parent's program, and the
launcher's side (:class:`WarmParent`) needs nothing more. Dagster's side (events, fallback,
terminate, health) is the run launcher's, in ``webtoon_assets.runs``.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path
from typing import Any, Sequence

# What the warm parent imports: Dagster and what a run worker of this project imports before its
# first step (the instance's storage and migrations, the compute log manager, the executor), and the
# third-party libraries the project's steps use. Never the project (webtoon_assets). A module that
# is missing is skipped (reported in the parent's hello). More: ``preload:`` in the launcher's config.
PRELOAD: tuple[str, ...] = (
    "dagster",
    "dagster._cli.api",
    "dagster._cli.utils",
    "dagster._grpc.impl",
    "dagster._core.execution.api",
    "dagster._core.executor.in_process",
    "dagster._core.instance.factory",
    "dagster._core.storage.runs.sqlite.sqlite_run_storage",
    "dagster._core.storage.event_log.sqlite.sqlite_event_log",
    "dagster._core.storage.event_log.sqlite.consolidated_sqlite_event_log",
    "dagster._core.storage.schedules.sqlite.sqlite_schedule_storage",
    "dagster._core.storage.local_compute_log_manager",
    "dagster._core.storage.root",
    "dagster._core.remote_representation",
    "dagster._core.workspace.context",
    "dagster._daemon.monitoring",
    "dagster._scheduler.scheduler",
    "alembic.command",
    "alembic.runtime.migration",
    "sqlalchemy",
    "watchdog.observers",
    "rich",
    "numpy",
    "PIL.Image",
    "PIL.ImageDraw",
    "PIL.ImageFont",
    "PIL.ImageChops",
    "PIL.ImageOps",
    "PIL.ImageFilter",
    "PIL.PngImagePlugin",
    "PIL.JpegImagePlugin",
    "duckdb",
    "httpx",
    "fal_client",
    "pydantic",
    "yaml",
    "filelock",
)
PROJECT_PACKAGE = "webtoon_assets"
HELLO_TIMEOUT_SECONDS = 120.0  # the parent's imports (~3-8 s), on a busy machine
REPLY_TIMEOUT_SECONDS = 60.0  # a fork
_INTERRUPTS = {signal.SIGINT, signal.SIGTERM}


class WarmParentUnavailable(RuntimeError):
    """The warm parent could not be started or asked: nothing was forked, another launcher may start the run."""


class WarmParentError(RuntimeError):
    """The warm parent was asked and did not confirm a fork: a worker may exist, so do not start another."""


def environment_stamp(python: str = sys.executable) -> tuple[tuple[str, int], ...]:
    """What, when it changes, makes the warm parent's imports stale: the modification times of the
    Python executable, the site-packages folders (an install or upgrade adds or renames entries),
    the project's uv.lock and this file."""
    paths = [Path(python), Path(__file__).resolve(), Path(__file__).resolve().parent.parent / "uv.lock"]
    paths += sorted({Path(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")})
    stamp = []
    for path in paths:
        try:
            stamp.append((str(path), path.stat().st_mtime_ns))
        except OSError:
            stamp.append((str(path), -1))
    return tuple(stamp)


# -- the launcher's side ----------------------------------------------------------------------------

class WarmParent:
    """The launcher's handle on its warm parent: started on the first :meth:`start_run`, replaced if
    it died or its environment changed, stopped by :meth:`stop` (its runs go on). Thread-safe."""

    def __init__(self, preload: Sequence[str] = PRELOAD, python: str = sys.executable):
        self.preload = tuple(dict.fromkeys(preload))
        self.python = python
        self.hello: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._stamp: tuple | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start_run(self, run_id: str, instance_ref: str) -> tuple[int, int]:
        """Fork a run worker for ``run_id`` (``instance_ref``: Dagster's serialized InstanceRef);
        returns (the worker's pid, the warm parent's pid)."""
        request = {"op": "run", "run_id": run_id, "instance_ref": instance_ref, "cwd": os.getcwd(),
                   "env": dict(os.environ)}
        with self._lock:
            parent = self._ensure_running()
            try:
                self._send(request)
            except OSError as exc:  # the parent died since: nothing was forked, start a new one
                self._stop_locked()
                parent = self._ensure_running()
                try:
                    self._send(request)
                except OSError:
                    self._stop_locked()
                    raise WarmParentUnavailable(f"the warm parent (pid {parent}) is not answering: {exc}") from exc
            try:
                reply = self._receive(REPLY_TIMEOUT_SECONDS)
            except (OSError, ValueError) as exc:
                self._stop_locked()
                raise WarmParentError(f"the warm parent (pid {parent}) did not confirm the fork: {exc}") from exc
        if "pid" not in reply:
            raise WarmParentUnavailable(f"the warm parent (pid {parent}) could not fork: {reply.get('error')}")
        return int(reply["pid"]), parent

    def ping(self, modules: Sequence[str] = ()) -> dict[str, Any]:
        """The warm parent's state: its pid, the project modules it has imported (none), and which
        of ``modules`` it has imported."""
        with self._lock:
            self._ensure_running()
            self._send({"op": "ping", "modules": list(modules)})
            return self._receive(REPLY_TIMEOUT_SECONDS)

    def stop(self) -> None:
        """Stop the warm parent (it exits once the socket is closed); the runs it forked go on."""
        with self._lock:
            self._stop_locked()

    def _ensure_running(self) -> int:
        stamp = environment_stamp(self.python)
        if self._proc is not None and (self._proc.poll() is not None or stamp != self._stamp):
            self._stop_locked()
        if self._proc is None:
            self._start(stamp)
        assert self._proc is not None
        return self._proc.pid

    def _start(self, stamp: tuple) -> None:
        ours, theirs = socket.socketpair()
        try:
            proc = subprocess.Popen([self.python, "-P", str(Path(__file__).resolve()), str(theirs.fileno())],
                                    pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, cwd=os.getcwd(),
                                    close_fds=True)
        except OSError as exc:
            ours.close()
            raise WarmParentUnavailable(f"could not start the warm parent: {exc}") from exc
        finally:
            theirs.close()
        self._proc, self._sock, self._buffer, self._stamp = proc, ours, b"", stamp
        try:
            self._send({"preload": list(self.preload)})
            self.hello = self._receive(HELLO_TIMEOUT_SECONDS)
        except (OSError, ValueError) as exc:
            self._stop_locked()
            raise WarmParentUnavailable(f"the warm parent did not start: {exc}") from exc
        if not self.hello.get("ready"):
            self._stop_locked()
            raise WarmParentUnavailable(f"the warm parent cannot run workers: {self.hello.get('error')}")
        if self.hello.get("failed"):  # each worker imports those itself, as it would without a warm parent
            logging.getLogger(__name__).warning("webtoon: the warm run-worker parent (pid %s) could not preload: %s",
                                                proc.pid, self.hello["failed"])

    def _stop_locked(self) -> None:
        proc, sock = self._proc, self._sock
        self._proc = self._sock = None
        if sock is not None:
            sock.close()
        if proc is not None:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def _send(self, message: dict) -> None:
        assert self._sock is not None
        self._sock.settimeout(REPLY_TIMEOUT_SECONDS)
        self._sock.sendall(json.dumps(message).encode() + b"\n")

    def _receive(self, timeout: float) -> dict:
        assert self._sock is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer in {timeout:g} s")
            self._sock.settimeout(min(left, 1.0))
            try:
                chunk = self._sock.recv(1 << 16)
            except socket.timeout:
                if self._proc is not None and self._proc.poll() is not None:
                    raise ConnectionError(f"the warm parent exited ({self._proc.returncode})") from None
                continue
            if not chunk:
                code = self._proc.poll() if self._proc is not None else None
                raise ConnectionError(f"the warm parent closed its socket (exit code {code})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)


# -- the warm parent's side -------------------------------------------------------------------------

def _preload(modules: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    import importlib

    loaded, failed = [], {}
    for name in modules:
        if name == PROJECT_PACKAGE or name.startswith(PROJECT_PACKAGE + "."):
            failed[name] = "the project is imported by each run, never by the warm parent"
            continue
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception as exc:  # noqa: BLE001 - a missing optional library only costs its import later
            failed[name] = f"{type(exc).__name__}: {exc}"
    return loaded, failed


def _cache_migration_scripts() -> str:
    """Dagster's SQLite storages compare each database's schema revision with the head of Dagster's
    migration scripts whenever they open it (``dagster._core.storage.sql.check_alembic_revision``):
    Alembic reads and executes its ~350 script files every time, 0.1-0.2 s per database and 3-4
    databases per run worker. The scripts are part of the installed dagster, which a warm parent never
    outlives (:func:`environment_stamp`), so it reads them once, here, and its workers reuse them:
    that check's ``ScriptDirectory.from_config`` returns one Alembic script directory per config.
    Nothing else changes (new databases are still stamped by Alembic's own commands)."""
    try:
        import dagster._core.storage.sql as sql
        from alembic.script import ScriptDirectory
        from dagster._core.storage.event_log.sqlite import sqlite_event_log
        from dagster._core.storage.runs.sqlite import sqlite_run_storage
        from dagster._core.storage.schedules.sqlite import sqlite_schedule_storage
    except ImportError as exc:
        return f"not cached: {exc}"
    if getattr(sql, "ScriptDirectory", None) is not ScriptDirectory or not hasattr(sql, "check_alembic_revision"):
        return "not cached: dagster._core.storage.sql is not as expected"
    cache: dict[tuple, Any] = {}

    class CachedScriptDirectory:
        @staticmethod
        def from_config(config: Any) -> Any:
            key = (config.config_file_name, config.get_main_option("script_location"))
            if key not in cache:
                cache[key] = ScriptDirectory.from_config(config)
            return cache[key]

    sql.ScriptDirectory = CachedScriptDirectory  # type: ignore[misc]
    heads = {CachedScriptDirectory.from_config(sql.get_alembic_config(m.__file__)).as_revision_number("head")
             for m in (sqlite_run_storage, sqlite_event_log, sqlite_schedule_storage)}
    return f"cached (head {', '.join(sorted(heads))})"


def _project_modules() -> list[str]:
    return sorted(m for m in sys.modules if m == PROJECT_PACKAGE or m.startswith(PROJECT_PACKAGE + "."))


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _read_line(sock: socket.socket, buffer: bytes) -> tuple[bytes | None, bytes]:
    """The next line from the launcher (None at its end), and what was read beyond it."""
    while b"\n" not in buffer:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return None, buffer
        buffer += chunk
    line, rest = buffer.split(b"\n", 1)
    return line, rest


def serve(fd: int) -> int:
    """The warm parent: import what the launcher's first line lists, say hello, then fork a run
    worker per request until the launcher closes the socket."""
    sock = socket.socket(fileno=fd)
    first, buffer = _read_line(sock, b"")
    if first is None:
        return 0
    preload = json.loads(first).get("preload", PRELOAD)
    # A Ctrl-C on the terminal reaches the whole process group: the runs handle theirs (each worker
    # sets Dagster's handler); this process ends when its launcher does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # What is imported here is shared with every worker, page for page, until written to: no garbage
    # collection here (it would leave holes), and what is imported is frozen out of the workers'
    # collections (which would otherwise touch, hence copy, every object's header). Workers collect.
    gc.disable()
    started = time.monotonic()
    loaded, failed = _preload(preload)
    migrations = _cache_migration_scripts() if "dagster" in loaded else "not cached: no dagster"
    gc.freeze()
    hello: dict[str, Any] = {"ready": True, "pid": os.getpid(), "preloaded": len(loaded), "failed": failed,
                             "migration_scripts": migrations,
                             "seconds": round(time.monotonic() - started, 3), "threads": threading.active_count(),
                             "project_modules": _project_modules()}
    try:
        from dagster._cli.api import _execute_run_command_body  # noqa: F401 - what each worker runs
        from dagster._cli.utils import get_instance_for_cli  # noqa: F401
    except ImportError as exc:
        hello.update(ready=False, error=f"this Dagster has no run worker entry point to call: {exc}")
    sock.sendall(json.dumps(hello).encode() + b"\n")
    if not hello["ready"]:
        return 1
    while True:
        if b"\n" not in buffer:
            readable, _, _ = select.select([sock], [], [], 1.0)
            _reap()  # the workers that have ended
            if readable:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    return 0  # the launcher is gone or let go: so are we; the runs go on
                buffer += chunk
            continue
        line, buffer = buffer.split(b"\n", 1)
        request = json.loads(line)
        if request.get("op") == "run":
            reply = _fork_run(sock, request)
        elif request.get("op") == "ping":
            reply = {"pid": os.getpid(), "project_modules": _project_modules(), "modules": len(sys.modules),
                     "imported": [m for m in request.get("modules", ()) if m in sys.modules]}
        else:
            reply = {"error": f"unknown request {request.get('op')!r}"}
        sock.sendall(json.dumps(reply).encode() + b"\n")


def _fork_run(sock: socket.socket, request: dict) -> dict:
    # Interrupts are blocked across the fork: a terminate that comes before the worker's handler is
    # in place waits for it (then cancels the run cleanly) instead of killing a half-started worker.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
    try:
        pid = os.fork()
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return {"error": f"fork failed: {exc}"}
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return {"pid": pid}
    code = 1
    try:
        sock.close()
        code = _run_worker(request, mask)
    except BaseException:  # noqa: BLE001 - the worker's own end: say why, then exit
        import traceback

        traceback.print_exc()
    finally:
        _exit(code)
    return {}  # not reached


def _exit(code: int) -> None:
    """End a worker as a process ends (threads joined, atexit run), without returning into the
    parent's loop."""
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # as multiprocessing's workers do
        import atexit

        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def _run_worker(request: dict, mask: Any) -> int:
    """In the forked child: the run, as ``dagster api execute_run`` runs it."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in any Python process
    gc.enable()
    from webtoon_assets.memory import limit_malloc_arenas  # in the child: the parent never imports the project

    limit_malloc_arenas()  # the run's threads share two arenas
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.argv = ["webtoon-run-worker", request["run_id"]]
    if "numpy.random" in sys.modules:  # forked children would share the parent's random state
        sys.modules["numpy.random"].seed()

    from dagster._cli.api import _execute_run_command_body
    from dagster._cli.utils import get_instance_for_cli
    from dagster._core.instance import InstanceRef
    from dagster._serdes import deserialize_value
    from dagster._utils.interrupts import capture_interrupts

    with capture_interrupts():  # SIGINT (and SIGTERM, mapped to it): an interrupt at the next checkpoint
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # one that came since the fork is delivered now
        ref = deserialize_value(request["instance_ref"], InstanceRef)
        with get_instance_for_cli(instance_ref=ref) as instance:
            return _execute_run_command_body(request["run_id"], instance, lambda _event: None,
                                             set_exit_code_on_failure=False)


if __name__ == "__main__":
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != here]  # never the project's folder
    sys.exit(serve(int(sys.argv[1])))
