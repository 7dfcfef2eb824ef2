"""Dagster's PostgreSQL storage (compose, Kubernetes) with connections that are kept, not opened per call.

dagster-postgres gives each of its three storages (runs, event log, schedules and ticks) an engine with
SQLAlchemy's ``NullPool``: every storage call opens a connection, which PostgreSQL serves with a new
server process after a SCRAM password exchange, and closes it. A small scoring run makes a few hundred
such calls and the daemon's sensor loops several per tick: in the compose stack a lone one-row upload took
~2.5x as long as under ``aimq up`` (SQLite), and the idle daemon kept a quarter of a core busy, most of it
in opening connections (py-spy; docs/batch.md, "Issue 26, second round").

``PooledPostgresStorage`` is ``DagsterPostgresStorage`` (same configuration, same tables) whose storages
share one pool of connections per process (``POOL_SIZE`` kept). dagster.yaml names it as custom storage
(deploy/dagster/cluster.yaml). The webserver still replaces the engines with its own pool
(``optimize_for_webserver``), as it does for Dagster's class.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

import sqlalchemy
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config

from aimq_pipelines import dagster_internals

# Idle connections a process keeps to one database; calls beyond them open an extra connection that
# is closed when the call ends, as NullPool does, so a burst never waits for one (max_overflow -1).
# The daemon evaluates its sensors in threads (~4 calls at once at its busiest); a run process calls
# from one thread and keeps one. The bound on the server: 20 Kubernetes runs at once (k8s
# max_concurrent_runs) keep ~20, and the daemon, webserver and code server up to 4 + 3 x 21 + 4, within
# PostgreSQL's default max_connections (100).
POOL_SIZE = 4

# One engine per database and process, shared by every storage of every instance the process makes:
# Dagster makes a new instance for each sensor evaluation in the code server (its context's
# instance), each with new storages; an engine each would keep nothing.
_engines: dict[tuple[str, str], sqlalchemy.engine.Engine] = {}
# The databases whose tables this process has seen (or created): later instances skip the check, which
# costs a connection and a catalog query per storage (`should_autocreate_tables`).
_checked: set[tuple[str, str]] = set()
_lock = threading.Lock()


class PooledPostgresStorage(DagsterPostgresStorage):
    """``dagster_postgres.DagsterPostgresStorage`` with pooled connections (module docstring)."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: Any = None,
        token_provider: Any = None,
    ) -> None:
        # A process has one dagster.yaml: the URL and the kind of token provider name the database.
        key = (postgres_url, type(token_provider).__name__)
        with _lock:
            check_tables = should_autocreate_tables and key not in _checked
            super().__init__(
                postgres_url,
                should_autocreate_tables=check_tables,
                inst_data=inst_data,
                token_provider=token_provider,
            )
            if check_tables:
                _checked.add(key)
            engine = _engines.get(key)
            if engine is None:
                engine = _engines[key] = _pooled_engine(postgres_url, token_provider)
        for storage in (self.run_storage, self.event_log_storage, self.schedule_storage):
            dagster_internals.replace_postgres_engine(storage, engine)

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: Any, config_value: Mapping[str, Any]
    ) -> PooledPostgresStorage:
        return cls(
            pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
            token_provider=get_token_provider_from_config(config_value),
        )


def _pooled_engine(postgres_url: str, token_provider: Any) -> sqlalchemy.engine.Engine:
    engine = create_pg_engine(
        postgres_url,
        token_provider,
        isolation_level="AUTOCOMMIT",  # as dagster-postgres: its storages rely on it
        pool_size=POOL_SIZE,
        max_overflow=-1,
        # A kept connection may have been closed by PostgreSQL (restarted, idle timeout): one round trip
        # per call finds out and reconnects, where a stale one would fail the call (a run's event).
        pool_pre_ping=True,
    )
    # In a forked child (a run process parses an upload in forked workers; anything may fork) the pooled
    # connections are the parent's sessions: used by both, two processes would interleave on one socket.
    # SQLAlchemy's recipe for os.fork: the child starts an empty pool and drops the inherited one without
    # closing it (psycopg2 does not end a session its process did not open; tested).
    os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
    return engine
