"""A throwaway PostgreSQL server for the tests: initdb in a temp dir, a free port on 127.0.0.1.

    from webtoon_assets_tests.pg_harness import postgres  # noqa: F401   (the session fixture)

    def test_something(postgres):
        url = postgres.create_database("ledger")   # a new empty database, its URL (psycopg2's form)
        dagster_url(url)                            # the same for SQLAlchemy/dagster-postgres: postgresql+psycopg2://

A plain ``postgresql://`` URL is libpq's (psycopg2.connect); SQLAlchemy 2.1 maps it to psycopg 3,
which dagster-postgres 0.29 does not work with, so DAGSTER_PG_URL takes ``dagster_url(url)``.

The server uses Debian's binaries (package ``postgresql``: /usr/lib/postgresql/<version>/bin); the
fixture skips when they are absent. PostgreSQL refuses to run as root, so as root initdb, postgres
and pg_ctl run as the ``postgres`` system user (the Debian package creates it), in a data dir
chowned to it. Trust authentication, listening on 127.0.0.1 only, the unix socket inside the temp
dir; fsync off (a test server loses nothing worth keeping). ``stop()`` shuts it down
(``pg_ctl stop -m fast``), waits for every one of its processes and deletes the data; it is also
registered with ``atexit``, and on Linux the postmaster gets SIGINT (fast shutdown) if the process
that started it dies, so no server is ever left behind.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

SUPERUSER = "postgres"  # the role initdb creates (-U); every URL connects as it
SYSTEM_USER = "postgres"  # who runs the server when we are root
BINARIES = ("initdb", "pg_ctl", "postgres")
START_TIMEOUT = 30.0
SOCKET_PATH_MAX = 100  # a unix socket path is at most 107 bytes (".s.PGSQL.<port>" included)


def find_postgres_bin() -> Path | None:
    """The directory with initdb, pg_ctl and postgres: Debian's /usr/lib/postgresql/<newest>/bin,
    else the one on PATH; None when PostgreSQL is not installed."""
    def has_all(d: Path) -> bool:
        return all(os.access(d / name, os.X_OK) for name in BINARIES)

    def version(d: Path) -> tuple[int, ...]:
        try:
            return tuple(int(p) for p in d.parent.name.split("."))
        except ValueError:
            return (0,)

    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True):
        if has_all(d):
            return d
    found = shutil.which("pg_ctl")
    if found and has_all(Path(found).resolve().parent):
        return Path(found).resolve().parent
    return None


def dagster_url(url: str) -> str:
    """``url`` with the psycopg2 driver named, for SQLAlchemy (DAGSTER_PG_URL, dagster-postgres)."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url[len(scheme):]
    return url


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_root() -> bool:
    return os.geteuid() == 0


def _system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise RuntimeError(f"running as root, PostgreSQL needs the '{SYSTEM_USER}' system user to run as "
                           "(the Debian package postgresql creates it)") from None


def _reachable_by(user: pwd.struct_passwd, path: Path) -> bool:
    """Whether ``user`` can traverse every directory down to ``path`` (e.g. not /tmp/pytest-of-root,
    which is 0700)."""
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for d in [path, *path.parents]:
        st = d.stat()
        if st.st_uid == user.pw_uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in groups:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            return False
    return True


def _set_parent_death_signal() -> None:  # runs in the child, between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG: fast shutdown
    except Exception:
        pass


class PgServer:
    """A running test server. ``url``: ``postgresql://postgres@127.0.0.1:<port>/postgres``."""

    def __init__(self, bin_dir: Path, directory: Path, port: int, proc: subprocess.Popen, user_kw: dict):
        self.bin_dir, self.directory, self.port, self.proc = bin_dir, directory, port, proc
        self.data_dir = directory / "data"
        self.socket_dir = directory / "sock"
        self.log_file = directory / "postgres.log"
        self._user_kw = user_kw
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def url_for(self, dbname: str) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def dagster_url_for(self, dbname: str) -> str:
        """``postgresql+psycopg2://...``: the URL for SQLAlchemy / dagster-postgres (DAGSTER_PG_URL)."""
        return dagster_url(self.url_for(dbname))

    def connect(self, dbname: str = "postgres"):
        """A psycopg2 connection (autocommit) to ``dbname``."""
        import psycopg2

        conn = psycopg2.connect(self.url_for(dbname))
        conn.autocommit = True
        return conn

    def create_database(self, name: str | None = None) -> str:
        """Create the empty database ``name`` (default: a new unique name); returns its URL."""
        from psycopg2 import sql

        name = name or f"test_{uuid.uuid4().hex[:12]}"

        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()
        return self.url_for(name)

    def processes(self) -> list[int]:
        """The pids of this server's processes still alive (every one has the data dir as its cwd)."""
        target, pids = str(self.data_dir), []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.readlink(entry / "cwd") == target:
                        pids.append(int(entry.name))
                except OSError:
                    pass
        return pids

    def stop(self, remove: bool = True) -> None:
        """Fast shutdown, wait for all its processes to exit, then delete its directory (``remove``).
        Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            if self.proc.poll() is None:
                subprocess.run([str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast",
                                "-w", "-t", "30"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               cwd=self.directory, **self._user_kw)
                for sig, wait in ((None, 30), (signal.SIGQUIT, 10), (signal.SIGKILL, 10)):
                    if sig is not None:
                        try:
                            self.proc.send_signal(sig)
                        except ProcessLookupError:
                            pass
                    try:
                        self.proc.wait(timeout=wait)
                        break
                    except subprocess.TimeoutExpired:
                        continue
            else:
                self.proc.wait()
            deadline = time.monotonic() + 10  # backends exit after the postmaster
            while (left := self.processes()) and time.monotonic() < deadline:
                time.sleep(0.05)
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if remove:
                shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "PgServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PgServer({self.url}, data={self.data_dir})"


def _server_dir(workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="pg-", dir=workdir))
    too_long = len(str(directory / "sock" / ".s.PGSQL.65535")) > SOCKET_PATH_MAX
    if too_long or (_as_root() and not _reachable_by(_system_user(), directory.parent)):
        directory.rmdir()  # the postgres user cannot reach it (or the socket path is too long)
        directory = Path(tempfile.mkdtemp(prefix="webtoon-pg-"))
    return directory


def start_postgres(workdir: Path) -> PgServer:
    """initdb and start a server in a new temp dir under ``workdir`` (under the system temp dir when
    the ``postgres`` user could not reach ``workdir``); returns when it accepts connections."""
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL is not installed: no initdb/pg_ctl/postgres in "
                                "/usr/lib/postgresql/*/bin nor on PATH (Debian package postgresql)")
    user_kw: dict = {}
    directory = _server_dir(Path(workdir))
    if _as_root():
        user = _system_user()
        user_kw = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        os.chown(directory, user.pw_uid, user.pw_gid)
    data, sock, log = directory / "data", directory / "sock", directory / "postgres.log"
    try:
        sock.mkdir()
        if _as_root():
            os.chown(sock, user_kw["user"], user_kw["group"])
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        env.pop("PGDATA", None)
        done = subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust",
                               "-E", "UTF8", "--locale=C", "--no-sync"],
                              cwd=directory, env=env, capture_output=True, text=True, **user_kw)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        with open(data / "postgresql.conf", "a") as conf:
            conf.write("\n# webtoon_assets_tests.pg_harness\n"
                       "listen_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{sock}'\n"
                       "max_connections = 200\n"
                       "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                       "shared_buffers = 32MB\n"
                       "logging_collector = off\n")
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    last_error = ""
    for _attempt in range(3):  # the free port can be taken between the probe and the bind
        port = _free_port()
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port)],
                cwd=directory, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # a ^C in the terminal is for pytest; stop() shuts it down
                preexec_fn=(_set_parent_death_signal if sys.platform.startswith("linux")
                            and threading.current_thread() is threading.main_thread() else None),
                **user_kw)
        server = PgServer(bin_dir, directory, port, proc, user_kw)
        if _wait_ready(server):
            atexit.register(server.stop)
            return server
        last_error = log.read_text(errors="replace")[-3000:]
        server.stop(remove=False)
        if "could not bind" not in last_error and "already in use" not in last_error:
            break
    shutil.rmtree(directory, ignore_errors=True)
    raise RuntimeError(f"PostgreSQL did not start:\n{last_error}")


def _wait_ready(server: PgServer) -> bool:
    """Until postmaster.pid says ``ready`` and a TCP connection is accepted; False if it exited."""
    pidfile = server.data_dir / "postmaster.pid"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return False
        try:
            lines = pidfile.read_text().splitlines()
        except OSError:
            lines = []
        if len(lines) >= 8 and lines[7].strip() == "ready":
            try:
                with socket.create_connection((server.host, server.port), timeout=1):
                    return True
            except OSError:
                pass
        time.sleep(0.02)
    return False


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    """A PostgreSQL server, started once and stopped at the end of the session; skips without
    PostgreSQL. Imported into a test module, the fixture is that module's (pytest registers an
    imported fixture per module): each importing module (per xdist worker) gets a server of its own,
    so database names need only be unique within a module."""
    if find_postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql): no initdb/pg_ctl/postgres in "
                    "/usr/lib/postgresql/*/bin nor on PATH")
    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    try:
        yield server
    finally:
        server.stop()

