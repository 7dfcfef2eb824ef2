"""Dagster's SQLite storage (`aimq up`, `aimq train`, `dagster dev`) with connections that are kept, not
opened per call.

Dagster's local storage (``DagsterSqliteStorage``: ``runs.db``, ``schedules.db``, and an event-log file
per run beside an index) makes a new SQLAlchemy engine with ``NullPool`` for every storage call and so
opens a new SQLite connection each time. A backlog run stores about a dozen events per upload (steps,
logs, the upload's asset materialization and checks), each ~4.9 ms of which ~3.5 ms were opening the
connection (measured: docs/batch.md, "Issue 26, fourth round"); with 300 small uploads at once that was
the largest cost left under ``aimq up`` (compose and Kubernetes keep theirs: ``postgres_storage.py``).

``PooledSqliteStorage`` is Dagster's class (same configuration, files and tables) whose storages connect
through engines kept per database file and process (``KeptSqliteEngines``). Unchanged: each call is one
transaction; SQLite's own locking between the processes that share the files (daemon, webserver, code
server, runs); WAL journaling and full synchronous commits (durability is Dagster's); the busy timeout of
Dagster's event log (30 s) for every file. A kept connection outside a call holds no lock and no snapshot
(pysqlite begins a transaction only for a write, and the pool rolls back on return).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import sqlalchemy

from aimq_pipelines import dagster_internals

# Idle connections kept per database file; calls beyond them (threads of the daemon, the webserver) open
# one that is closed after the call, as before. Dagster's event log calls hold its storage's lock, so a
# run process uses one connection per file at a time.
POOL_SIZE = 2
# Database files with kept connections per process: runs.db, schedules.db, the event-log index, and the
# run files used most recently (a run writes its own; the daemon and webserver read many). The least
# recently used one beyond this is closed: its file descriptors and page cache do not pile up.
MAX_DATABASES = 32
# Seconds a call waits for another process's write lock: Dagster's event log's own timeout
# (SQLITE_BUSY_TIMEOUT_SECONDS), now for the run and schedule storages too (sqlite3's default: 5 s).
BUSY_TIMEOUT_S = 30.0


class KeptSqliteEngines:
    """One pooled engine per SQLite database URL in this process, least recently used dropped first."""

    def __init__(self, max_databases: int = MAX_DATABASES) -> None:
        self.max_databases = max_databases
        self._engines: OrderedDict[str, sqlalchemy.engine.Engine] = OrderedDict()
        self._lock = threading.Lock()
        # A forked child's inherited engines: never used, closed or collected there (after_fork_in_child).
        self._inherited: list[OrderedDict[str, sqlalchemy.engine.Engine]] = []

    def get(self, url: str) -> sqlalchemy.engine.Engine:
        with self._lock:
            engine = self._engines.get(url)
            if engine is not None:
                self._engines.move_to_end(url)
                return engine
            engine = self._engines[url] = sqlalchemy.create_engine(
                url, pool_size=POOL_SIZE, max_overflow=-1, connect_args={"timeout": BUSY_TIMEOUT_S}
            )
            dropped = []
            while len(self._engines) > self.max_databases:
                dropped.append(self._engines.popitem(last=False)[1])
        # Closes the idle connections; one in use by another thread is closed when that call returns it.
        for old in dropped:
            old.dispose()
        return engine

    def forget(self, url: str) -> None:
        """Close the connections to a database file that is about to be deleted (a purged run's)."""
        with self._lock:
            engine = self._engines.pop(url, None)
        if engine is not None:
            engine.dispose()

    def after_fork_in_child(self) -> None:
        # SQLite: a connection opened before fork() must not be used in the child, and closing it there
        # (even by the garbage collector) is a use. The child (a run's parser workers, a forkserver's
        # run) starts with no engines and keeps the parent's referenced, untouched, until it exits. The
        # lock may have been held by a thread of the parent that the child does not have.
        self._inherited.append(self._engines)
        self._engines = OrderedDict()
        self._lock = threading.Lock()


ENGINES = KeptSqliteEngines()
os.register_at_fork(after_in_child=ENGINES.after_fork_in_child)


class PooledSqliteStorage(dagster_internals.SQLITE_STORAGE.load()):  # type: ignore[misc]
    """Dagster's ``DagsterSqliteStorage`` with kept connections (module docstring). Configured as the
    local instance's ``storage: custom:`` with the same ``base_dir`` (deploy/dagster/local.yaml)."""

    def __init__(self, base_dir: str, inst_data: Any = None) -> None:
        super().__init__(base_dir, inst_data=inst_data)
        dagster_internals.keep_sqlite_connections(self, ENGINES)

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Mapping[str, Any]) -> PooledSqliteStorage:
        # Dagster's from_config_value builds its own class by name, whatever the subclass.
        return cls.from_local(inst_data=inst_data, **config_value)
