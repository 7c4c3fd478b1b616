"""Dagster's SQLite storage, keeping its connections open.

Dagster's own SQLite storage opens a new engine and connection for every read and write, and closes
them after: the close of a database's last connection checkpoints its write-ahead log, so every
event costs an open, a commit, a checkpoint and a close (13-21 ms here, for the ~120 events an
episode's run writes, ~2 s a run). This storage is the same files, tables and layout (a drop-in for
``storage: sqlite``: the same ``base_dir``), whose engines keep their connections between calls:
~4-7 ms an event, commits as durable as before (each one still fsynced).

What stays as it was: one connection in use at a time per database unless Dagster nests calls (then
a second one is opened for the nested call and closed after); the busy timeouts; several processes
(UI, daemon, runs) sharing the files through SQLite's own locking. After a fork the child opens its
own connections (a connection must never cross a fork). The event log keeps the connections of the
index and of the few runs written last (a long-lived UI reads many runs; their engines are closed as
they age out). Only this module of the project is imported by the UI and the daemon for it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

RUN_SHARDS_KEPT = 4  # run databases whose connection stays open, besides the index's


def _engine(conn_string: str, **connect_args) -> Engine:
    # One pooled connection, reused call after call; a nested call gets an overflow connection,
    # closed when it is returned. check_same_thread: the pool hands a connection to one thread at a time.
    return create_engine(conn_string, poolclass=QueuePool, pool_size=1, max_overflow=-1,
                         connect_args={**connect_args, "check_same_thread": False})


class _Engines:
    """Engines by database, for this process only, the least recently used closed past ``keep``."""

    def __init__(self, keep: int | None = None, pinned: tuple[str, ...] = ()):
        self._keep, self._pinned = keep, pinned
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._engines: OrderedDict[str, Engine] = OrderedDict()

    def get(self, name: str, make) -> Engine:
        """The engine of database ``name``, made by ``make()`` if there is none."""
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's connections are not ours to use or close
                for engine in self._engines.values():
                    engine.dispose(close=False)
                self._engines.clear()
                self._pid = os.getpid()
            engine = self._engines.get(name)
            if engine is not None:
                self._engines.move_to_end(name)
                return engine
            engine = self._engines[name] = make()
            if self._keep is not None:
                unpinned = [n for n in self._engines if n not in self._pinned]
                for old in unpinned[:max(0, len(unpinned) - self._keep)]:
                    self._engines.pop(old).dispose()
            return engine

    def close_all(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()


class KeptSqliteEventLogStorage(SqliteEventLogStorage):
    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        # before super().__init__, which may already connect (a new index is reindexed)
        self._kept = _Engines(keep=RUN_SHARDS_KEPT, pinned=(INDEX_SHARD_NAME,))
        super().__init__(base_dir, inst_data)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:  # as Dagster's: one connection at a time in this process
            engine = self._kept.get(shard, lambda: _engine(self.conn_string_for_shard(shard),
                                                           timeout=SQLITE_BUSY_TIMEOUT_SECONDS))
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                with conn.begin():
                    yield conn

    def wipe(self) -> None:
        self._kept.close_all()  # wipe deletes the run databases' files
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self._kept.close_all()


class KeptSqliteRunStorage(SqliteRunStorage):
    def __init__(self, conn_string: str, inst_data: ConfigurableClassData | None = None):
        self._kept = _Engines()
        super().__init__(conn_string, inst_data)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        engine = self._kept.get("runs", lambda: _engine(self._conn_string))
        with engine.connect() as conn:
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        super().dispose()
        self._kept.close_all()


class KeptSqliteStorage(DagsterSqliteStorage):
    """``storage: sqlite`` with connections kept open (see the module's docstring). In dagster.yaml::

        storage:
          custom:
            module: webtoon_assets.instance_storage
            class: KeptSqliteStorage
            config:
              base_dir: data/dagster/storage
    """

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        # DagsterSqliteStorage.__init__, with the kept storages in place of its own
        self.base_dir = base_dir
        self._run_storage = KeptSqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = KeptSqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        DagsterStorage.__init__(self)

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> KeptSqliteStorage:  # type: ignore[override]
        return cls.from_local(inst_data=inst_data, **config_value)
