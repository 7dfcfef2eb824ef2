"""Every use AIMQ makes of Dagster's internals (``dagster._``), in one place: nothing else imports them.

Dagster's public API (``import dagster as dg``) has no way to do these; each entry says who uses it,
why no public API serves, and what breaks when a Dagster release changes it. The dagster family is
pinned together (pyproject.toml); on an upgrade, tests/pipelines/test_dagster_internals.py loads each
entry and fails with its ``changed`` message, naming the use, instead of a traceback deep in a run
(docs/architecture.md, "Upgrading Dagster").

An entry is loaded when first used (``load``), not when this module is imported: the code location
imports this module, and some entries (the CLI, the retry daemon) are large and needed by one process.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import multiprocessing.context
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import dagster as dg
import sqlalchemy
import yaml


class DagsterInternalsChanged(RuntimeError):
    """A Dagster internal AIMQ relies on is gone or changed shape."""


@dataclass(frozen=True)
class Internal:
    module: str
    name: str
    used_by: str
    why: str
    breaks: str

    def changed(self, what: str) -> str:
        return (
            f"dagster {dg.__version__} changed an internal AIMQ uses, {self.module}.{self.name}: {what}. "
            f"Used by {self.used_by}: {self.why}. If it is not adapted: {self.breaks}. "
            "See docs/architecture.md, 'Upgrading Dagster'."
        )

    def load(self) -> Any:
        try:
            return getattr(importlib.import_module(self.module), self.name)
        except (ImportError, AttributeError) as exc:
            raise DagsterInternalsChanged(self.changed(f"{type(exc).__name__}: {exc}")) from exc


GRPC_COMMAND = Internal(
    "dagster._cli.api",
    "grpc_command",
    used_by="aimq_pipelines.code_server",
    why="the `dagster api grpc` command itself, run in-process after the server's multiprocessing context "
    "is replaced; the CLI has no hook for that",
    breaks="`aimq up` cannot start its code server",
)
API_SERVER = Internal(
    "dagster._grpc.server",
    "DagsterApiServer",
    used_by="aimq_pipelines.code_server (replace_run_process_context)",
    why="the server starts each run process from its `_mp_ctx` ('spawn', set in its constructor); Dagster has "
    "no option for it, and a forkserver context makes runs start warm (docs/batch.md, 'Many small files')",
    breaks="`aimq up` refuses to start its code server (runs would start cold, 1.7-1.9 s more per run)",
)
INSTANCE_REF = Internal(
    "dagster._core.instance.ref",
    "InstanceRef",
    used_by="aimq_pipelines.code_server (instance_modules)",
    why="the modules of the storage classes dagster.yaml configures, so the forkserver imports them once; "
    "`DagsterInstance.from_ref` imports them in each run otherwise (0.5 s)",
    breaks="`aimq up` cannot start its code server",
)
CONFIGURABLE_CLASS_DATA = Internal(
    "dagster._serdes",
    "ConfigurableClassData",
    used_by="aimq_pipelines.code_server (instance_modules), aimq_pipelines.run_launcher (configured_class)",
    why="how an InstanceRef names each configured class (module and class name), and how a configured class "
    "is made from its module, name and config (the size-routed launcher's isolated launcher)",
    breaks="`aimq up` cannot start its code server; compose and k8s instances fail to load their run launcher",
)
LIST_REPOSITORIES = Internal(
    "dagster._api.list_repositories",
    "sync_list_repositories_grpc",
    used_by="aimq_pipelines.code_server_check",
    why="the call the webserver and daemon make to a code server; its load error is what the health check "
    "must see (the gRPC health service answers SERVING even when the code location failed to load)",
    breaks="the code server's compose healthcheck and k8s probes fail: compose and k8s never get healthy",
)
GRPC_CLIENT = Internal(
    "dagster._grpc.client",
    "DagsterGrpcClient",
    used_by="aimq_pipelines.code_server_check",
    why="the client LIST_REPOSITORIES takes",
    breaks="as LIST_REPOSITORIES",
)
USER_CODE_UNREACHABLE = Internal(
    "dagster._core.errors",
    "DagsterUserCodeUnreachableError",
    used_by="aimq_pipelines.code_server_check",
    why="what LIST_REPOSITORIES raises when no server answers",
    breaks="as LIST_REPOSITORIES",
)
USER_CODE_PROCESS_ERROR = Internal(
    "dagster._core.errors",
    "DagsterUserCodeProcessError",
    used_by="aimq_pipelines.code_server_check",
    why="what LIST_REPOSITORIES raises when the code location failed to load",
    breaks="as LIST_REPOSITORIES",
)
ACTIVE_RUN_STATUSES = Internal(
    "dagster._core.storage.dagster_run",
    "ACTIVE_RUN_STATUSES",
    used_by="aimq_pipelines.run_coordinator",
    why="the statuses the queue daemon counts against max_concurrent_runs; the prompt launch must count the same ones",
    breaks="dagster.yaml's run coordinator fails to submit runs: no run starts locally, in compose or k8s",
)
SHOULD_RETRY = Internal(
    "dagster._daemon.auto_run_reexecution.auto_run_reexecution",
    "should_retry",
    used_by="aimq_pipelines.uploads.run_failures (retry_follows)",
    why="the retry daemon's own decision, computed from the same inputs when the run's dagster/will_retry "
    "tag is not written yet, so the sensor and the daemon act on one decision (issue 17)",
    breaks="the run-failure sensor fails its ticks: uploads of a failed run stay `running`",
)
RETRY_CURSOR_KEY = Internal(
    "dagster._daemon.auto_run_reexecution.event_log_consumer",
    "_create_cursor_key",
    used_by="aimq_pipelines.uploads.run_failures (_rewind_retry_daemon)",
    why="the retry daemon's cursor key, to make it read again a failure it skipped (it read the run "
    "before its status was FAILURE)",
    breaks="the run-failure sensor fails its ticks when a retry is skipped: those uploads stay `running`",
)

SQLITE_EVENT_LOG_STORAGE = Internal(
    "dagster._core.storage.event_log.sqlite.sqlite_event_log",
    "SqliteEventLogStorage",
    used_by="aimq_pipelines.uploads.run_retention (delete_run_files), share_storage_migrations (its module's file "
    "locates the storages' alembic configuration)",
    why="the local instance keeps each run's event log in a SQLite file of its own (path_for_shard); "
    "DagsterInstance.delete_run deletes the rows and leaves the file (~190 KB, measured by "
    "benchmarks/soak_benchmark.py), and no public API removes it",
    breaks="`aimq up`'s DAGSTER_HOME/history/runs keeps a file per deleted run: it grows without end",
)

INSTIGATOR_TYPE = Internal(
    "dagster._core.definitions.run_request",
    "InstigatorType",
    used_by="aimq_pipelines.uploads.sensors (pending_sensor_requests), aimq_pipelines.uploads.run_retention "
    "(purge_sensor_ticks)",
    why="selects the sensors' states among the instance's instigators; `DagsterInstance.all_instigator_state` "
    "and `get_ticks` take it, and no public API lists another sensor's ticks",
    breaks="the upload sensors fail every tick that takes a message delivered before: such uploads wait in the queue",
)
TICK_STATUS = Internal(
    "dagster._core.scheduler.instigation",
    "TickStatus",
    used_by="aimq_pipelines.uploads.sensors (pending_sensor_requests), aimq_pipelines.uploads.run_retention "
    "(purge_sensor_ticks)",
    why="which ticks still have run requests the daemon will submit (STARTED: resumed; FAILURE: retried), "
    "and so which ones a purge may delete",
    breaks="as INSTIGATOR_TYPE",
)
MAX_FAILURE_RESUBMISSION_RETRIES = Internal(
    "dagster._daemon.sensor",
    "MAX_FAILURE_RESUBMISSION_RETRIES",
    used_by="aimq_pipelines.uploads.sensors (pending_sensor_requests)",
    why="how many times the daemon submits a failed tick's run requests again; past it they never are",
    breaks="as INSTIGATOR_TYPE",
)

RUN_LAUNCHER_TYPES = Internal(
    "dagster._core.launcher",
    "CheckRunHealthResult",
    used_by="aimq_pipelines.run_launcher (code_server_run_health)",
    why="what a run launcher's check_run_worker_health returns to run monitoring; not exported by dagster",
    breaks="run monitoring fails its checks of runs started in the code server (compose, k8s)",
)
WORKER_STATUS = Internal(
    "dagster._core.launcher",
    "WorkerStatus",
    used_by="aimq_pipelines.run_launcher (code_server_run_health)",
    why="the status inside RUN_LAUNCHER_TYPES",
    breaks="as RUN_LAUNCHER_TYPES",
)
GRPC_INFO_TAG = Internal(
    "dagster._core.storage.tags",
    "GRPC_INFO_TAG",
    used_by="aimq_pipelines.run_launcher (code_server_run_health)",
    why="the tag DefaultRunLauncher writes with the address of the code server it started a run in",
    breaks="as RUN_LAUNCHER_TYPES",
)
GET_CURRENT_RUNS_RESULT = Internal(
    "dagster._grpc.types",
    "GetCurrentRunsResult",
    used_by="aimq_pipelines.run_launcher (code_server_run_health)",
    why="the answer of a code server's GetCurrentRuns: the runs whose processes it still has",
    breaks="as RUN_LAUNCHER_TYPES",
)
ASSET_CHECK_EXECUTIONS_TABLE = Internal(
    "dagster._core.storage.event_log.schema",
    "AssetCheckExecutionsTable",
    used_by="aimq_pipelines.monitoring.retention (delete_check_executions)",
    why="the check results of a purged upload's scored_uploads partition are rows of this table; "
    "DagsterInstance.delete_run deletes a run's events but not these rows, delete_dynamic_partition "
    "neither, and wipe_asset_partitions is not implemented by the SQL storages",
    breaks="the check results of purged uploads stay in Dagster's database for ever (the purge job fails "
    "with this message instead of growing it silently)",
)
SQL_EVENT_LOG_STORAGE = Internal(
    "dagster._core.storage.event_log.sql_event_log",
    "SqlEventLogStorage",
    used_by="aimq_pipelines.monitoring.retention (delete_check_executions)",
    why="its index_connection is where ASSET_CHECK_EXECUTIONS_TABLE lives, for SQLite (local) and PostgreSQL "
    "(compose, k8s) alike",
    breaks="as ASSET_CHECK_EXECUTIONS_TABLE",
)

ALEMBIC_CONFIG = Internal(
    "dagster._core.storage.sql",
    "get_alembic_config",
    used_by="aimq_pipelines.warm_runs (share_storage_migrations)",
    why="the alembic configuration of Dagster's SQL storages, which all share one script location: the forkserver "
    "reads its ~90 migration scripts once, where each run process read them five times (its new event log "
    "database stamped and checked, the run and schedule storages checked: 0.14 s of a small upload's run)",
    breaks="runs read the migration scripts again each (0.14 s more per run); the code server still starts",
)

SQLITE_STORAGE = Internal(
    "dagster._core.storage.sqlite_storage",
    "DagsterSqliteStorage",
    used_by="aimq_pipelines.sqlite_storage (PooledSqliteStorage, keep_sqlite_connections)",
    why="the local instance's storage (Dagster's default) has no public class; its run and schedule storages "
    "(`connect`) and its event log (`_connect`: a SQLite file per run, and an index) make a new engine with "
    "NullPool and open a new SQLite connection for every call: ~3.5 ms of the ~4.9 ms an event took "
    "(docs/batch.md, 'Issue 26, fourth round'), and a backlog run stores a dozen events per upload",
    breaks="`aimq up`, `aimq train` and `dagster dev` refuse to open the instance (they would run, slower, on "
    "a new connection per call)",
)
POSTGRES_STORAGE = Internal(
    "dagster_postgres",
    "DagsterPostgresStorage",
    used_by="aimq_pipelines.postgres_storage (replace_postgres_engine)",
    why="each of its run, event log and schedule storages connects through its `_engine`, made with NullPool "
    "(a new PostgreSQL connection and server process per call); the only public way to change it, "
    "`optimize_for_webserver`, keeps one connection per storage, opens and closes one per concurrent call "
    "beyond it and sets a statement timeout",
    breaks="compose and Kubernetes processes refuse to open Dagster's storage (they would run, slower, on "
    "a new connection per call)",
)

# Modules the code server's forkserver imports ahead of every run (aimq_pipelines.code_server.PRELOAD):
# Dagster's run execution path and the instance's defs-state storage. multiprocessing ignores a preload
# that fails to import, so a moved module would make runs start cold without a word: the test imports each.
RUN_PATH_MODULES = (
    "dagster._grpc.impl",
    "dagster._core.execution.api",
    "dagster._core.storage.defs_state.blob_storage_state_storage",
)

INTERNALS = (
    GRPC_COMMAND,
    API_SERVER,
    INSTANCE_REF,
    CONFIGURABLE_CLASS_DATA,
    LIST_REPOSITORIES,
    GRPC_CLIENT,
    USER_CODE_UNREACHABLE,
    USER_CODE_PROCESS_ERROR,
    ACTIVE_RUN_STATUSES,
    SHOULD_RETRY,
    RETRY_CURSOR_KEY,
    SQLITE_EVENT_LOG_STORAGE,
    INSTIGATOR_TYPE,
    TICK_STATUS,
    MAX_FAILURE_RESUBMISSION_RETRIES,
    RUN_LAUNCHER_TYPES,
    WORKER_STATUS,
    GRPC_INFO_TAG,
    GET_CURRENT_RUNS_RESULT,
    ASSET_CHECK_EXECUTIONS_TABLE,
    SQL_EVENT_LOG_STORAGE,
    ALEMBIC_CONFIG,
    POSTGRES_STORAGE,
    SQLITE_STORAGE,
)

# The attribute API_SERVER's constructor sets to its multiprocessing context.
_MP_CONTEXT_ATTRIBUTE = "_mp_ctx"


def replace_run_process_context(context: multiprocessing.context.BaseContext) -> None:
    """Make every DagsterApiServer made after this start its run processes from ``context``."""
    server = API_SERVER.load()
    original = server.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if not hasattr(self, _MP_CONTEXT_ATTRIBUTE):  # renamed: fail loudly rather than start runs cold
            raise DagsterInternalsChanged(API_SERVER.changed(f"its instances have no {_MP_CONTEXT_ATTRIBUTE}"))
        setattr(self, _MP_CONTEXT_ATTRIBUTE, context)

    server.__init__ = __init__


def share_storage_migrations() -> None:
    """From now on this process reads the migration scripts of Dagster's SQL storages once: every
    ``ScriptDirectory`` alembic makes for their script location is the one read here.

    Dagster makes a new ``ScriptDirectory`` each time it checks or stamps a database's revision, and
    alembic then loads every migration script of it again. The scripts are files of the installed
    dagster package: they cannot change while the process runs, so one reading serves every check.
    A stamp or a check still reads each database's own revision."""
    from alembic.script import ScriptDirectory

    config = ALEMBIC_CONFIG.load()(_module_file(SQLITE_EVENT_LOG_STORAGE))
    location = config.get_main_option("script_location")
    shared = ScriptDirectory.from_config(config)
    shared.as_revision_number("head")  # reads the scripts now (the revision map is kept on the object)
    original = ScriptDirectory.from_config

    def from_config(config: Any) -> Any:
        if config.get_main_option("script_location") == location and not config.get_main_option("version_locations"):
            return shared
        return original(config)

    ScriptDirectory.from_config = staticmethod(from_config)  # type: ignore[method-assign,assignment]


def _module_file(internal: Internal) -> str:
    module = importlib.import_module(internal.module)
    if not module.__file__:
        raise DagsterInternalsChanged(internal.changed("its module has no file"))
    return module.__file__


def configured_class_modules(dagster_home: str) -> list[str]:
    """The modules of the classes the instance in ``dagster_home`` is configured with."""
    ref = INSTANCE_REF.load().from_dir(dagster_home)
    class_data = CONFIGURABLE_CLASS_DATA.load()
    return [v.module_name for v in ref._asdict().values() if isinstance(v, class_data)]


# The set of run ids whose event-log file SQLITE_EVENT_LOG_STORAGE has created in this process.
_INITIALIZED_SHARDS_ATTRIBUTE = "_initialized_dbs"
# Set by keep_sqlite_connections on the event log: the engines its calls go through.
_KEPT_ENGINES_ATTRIBUTE = "_aimq_kept_engines"


def delete_run_files(instance: dg.DagsterInstance, run_id: str) -> None:
    """What ``instance.delete_run`` leaves of a run on disk: the local instance's SQLite event-log file
    of the run (with its -wal and -shm), and the run's folder of compute logs and step outputs
    (``$DAGSTER_HOME/storage/<run_id>``: the compute log manager's and the filesystem IO manager's)."""
    storage = instance.event_log_storage
    if isinstance(storage, SQLITE_EVENT_LOG_STORAGE.load()):
        if not hasattr(storage, "path_for_shard"):
            raise DagsterInternalsChanged(SQLITE_EVENT_LOG_STORAGE.changed("it has no path_for_shard"))
        if not hasattr(storage, _INITIALIZED_SHARDS_ATTRIBUTE):
            raise DagsterInternalsChanged(
                SQLITE_EVENT_LOG_STORAGE.changed(f"it has no {_INITIALIZED_SHARDS_ATTRIBUTE}")
            )
        shard = storage.path_for_shard(run_id)
        kept = getattr(storage, _KEPT_ENGINES_ATTRIBUTE, None)
        if kept is not None:  # close this process's connections to the file before it goes
            kept.forget(storage.conn_string_for_shard(run_id))
        for path in (shard, f"{shard}-wal", f"{shard}-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        # This process's storage remembers the file as made: reading the deleted run's events here
        # would then find a new empty file without tables and fail, instead of finding no events.
        getattr(storage, _INITIALIZED_SHARDS_ATTRIBUTE).discard(run_id)
    # Public: every compute log manager deletes by prefix; the local one removes the whole folder.
    instance.compute_log_manager.delete_logs(prefix=[run_id])


def pending_sensor_requests(instance: dg.DagsterInstance, sensor_names: frozenset[str]) -> list[dg.RunRequest]:
    """The run requests that ticks of the sensors ``sensor_names`` returned and the daemon has not
    submitted yet but will: each sensor's latest tick, STARTED (being submitted, or resumed after a
    daemon restart) or FAILURE (submitted again at that sensor's next tick, a limited number of times).

    Dagster writes a tick's requests (with their reserved run ids) before it submits any of them, and
    de-duplicates run keys per sensor only: this is how one sensor knows another has an upload's run
    on the way (aimq_pipelines/uploads/sensors.py)."""
    sensor = INSTIGATOR_TYPE.load().SENSOR
    status = TICK_STATUS.load()
    retries = MAX_FAILURE_RESUBMISSION_RETRIES.load()
    pending: list[dg.RunRequest] = []
    for state in instance.all_instigator_state(instigator_type=sensor):
        if state.instigator_name not in sensor_names:
            continue
        for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1):
            if tick.status == status.STARTED or (
                tick.status == status.FAILURE and tick.tick_data.failure_count <= retries
            ):
                pending += [request for _, request in tick.unsubmitted_run_ids_with_requests]
    return pending


def purge_sensor_ticks(instance: dg.DagsterInstance, sensors: Callable[[str], bool], before: float) -> list[str]:
    """Delete the skipped and successful ticks older than ``before`` (epoch seconds) of the sensors
    whose names ``sensors`` accepts; returns those sensors' names. Failed and started ticks stay
    (a failed tick's requests may still be submitted, a started one resumed: ``pending_sensor_requests``);
    dagster.yaml's ``retention:`` purges them, by whole days."""
    status = TICK_STATUS.load()
    purged = []
    for state in instance.all_instigator_state(instigator_type=INSTIGATOR_TYPE.load().SENSOR):
        if not sensors(state.instigator_name):
            continue
        instance.purge_ticks(
            state.instigator_origin_id, state.selector_id, before=before, tick_statuses=[status.SKIPPED, status.SUCCESS]
        )
        purged.append(state.instigator_name)
    return sorted(purged)


# The attribute each storage of POSTGRES_STORAGE connects through.
_ENGINE_ATTRIBUTE = "_engine"


def replace_postgres_engine(storage: Any, engine: sqlalchemy.engine.Engine) -> None:
    """Make ``storage`` (a run, event log or schedule storage of POSTGRES_STORAGE) connect through
    ``engine``; its own engine holds no connection (NullPool) and is disposed."""
    old = getattr(storage, _ENGINE_ATTRIBUTE, None)
    if not isinstance(old, sqlalchemy.engine.Engine):
        raise DagsterInternalsChanged(
            POSTGRES_STORAGE.changed(f"its {type(storage).__name__} has no SQLAlchemy engine in {_ENGINE_ATTRIBUTE}")
        )
    setattr(storage, _ENGINE_ATTRIBUTE, engine)
    old.dispose()


class KeptEngines(Protocol):
    """Where SQLITE_STORAGE's storages get their engines (aimq_pipelines.sqlite_storage)."""

    def get(self, url: str) -> sqlalchemy.engine.Engine: ...

    def forget(self, url: str) -> None: ...


# The attributes SQLITE_STORAGE's storages connect through.
_SQLITE_RUNS_ATTRIBUTES = ("_conn_string", "connect")
_SQLITE_EVENTS_ATTRIBUTES = (
    "_db_lock",
    _INITIALIZED_SHARDS_ATTRIBUTE,
    "_initdb",
    "conn_string_for_shard",
    "path_for_shard",
    "_connect",
)


def keep_sqlite_connections(storage: Any, engines: KeptEngines) -> None:
    """Make the run, event log and schedule storages of ``storage`` (a SQLITE_STORAGE) connect through
    ``engines.get(url)``, where Dagster's own make an engine and open a connection per call. Each call is
    otherwise Dagster's: a transaction on one connection; a run's event-log file is made ready (tables,
    WAL, alembic stamp: ``_initialize_shard``) the first time this storage touches it, under its lock."""
    runs, events, schedules = storage.run_storage, storage.event_log_storage, storage.schedule_storage
    for part, names in (
        (runs, _SQLITE_RUNS_ATTRIBUTES),
        (schedules, _SQLITE_RUNS_ATTRIBUTES),
        (events, _SQLITE_EVENTS_ATTRIBUTES),
    ):
        missing = [name for name in names if not hasattr(part, name)]
        if missing:
            raise DagsterInternalsChanged(
                SQLITE_STORAGE.changed(f"its {type(part).__name__} has no {', '.join(missing)}")
            )
    runs.connect = _connect_through(engines, runs._conn_string)
    schedules.connect = _connect_through(engines, schedules._conn_string)
    events._connect = _shard_connect_through(engines, events)
    setattr(events, _KEPT_ENGINES_ATTRIBUTE, engines)


def _connect_through(engines: KeptEngines, url: str) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    @contextlib.contextmanager
    def connect() -> Iterator[sqlalchemy.engine.Connection]:
        with engines.get(url).connect() as connection, connection.begin():
            yield connection

    return connect


def _shard_connect_through(
    engines: KeptEngines, events: Any
) -> Callable[[str], contextlib.AbstractContextManager[Any]]:
    template = _ShardTemplate(events)

    @contextlib.contextmanager
    def _connect(shard: str) -> Iterator[sqlalchemy.engine.Connection]:
        with events._db_lock:
            engine = engines.get(events.conn_string_for_shard(shard))
            initialized = getattr(events, _INITIALIZED_SHARDS_ATTRIBUTE)
            if shard not in initialized:
                _initialize_shard(events, engine, shard, template)
                initialized.add(shard)
            with engine.connect() as connection, connection.begin():
                yield connection

    return _connect


def _initialize_shard(events: Any, engine: sqlalchemy.engine.Engine, shard: str, template: _ShardTemplate) -> None:
    """What Dagster's ``_initdb`` does for an event-log file, without its cost where that is not needed.

    ``_initdb`` loads alembic's migration scripts (about 180 files: ~0.1 s) to read the file's revision, and
    for a new file creates the tables, sets WAL and stamps it; once per file and process: for every run in
    the daemon, which makes its file (130 ms in all), and again in each process that reads it and has not
    read the scripts once already (``share_storage_migrations``: the code server's run processes have;
    measured: docs/batch.md, "Issue 26, fifth round"). Here a new file is a copy of one
    ``_initdb`` made in this process (this Dagster: the same tables, WAL mode and revision), put in place
    only where no file is; and a file with its alembic_version row is taken as made, as ``_initdb`` takes
    it (it creates only where there is no revision, and migrates no run file). Anything else, such as a
    file another process is still making, is left to ``_initdb`` and its retries."""
    path = events.path_for_shard(shard)
    if not os.path.exists(path):
        template.copy_to(path)
    if not _stamped(engine):
        events._initdb(engine)


def _stamped(engine: sqlalchemy.engine.Engine) -> bool:
    """The file has its one alembic revision (the version table is alembic's default, which Dagster's stamp
    uses)."""
    with engine.connect() as connection:
        try:
            rows = connection.exec_driver_sql("SELECT version_num FROM alembic_version").fetchall()
        except sqlalchemy.exc.OperationalError:  # no such table (not made yet), or locked by its maker
            return False
    return len(rows) == 1 and bool(rows[0][0])


class _ShardTemplate:
    """The bytes of a new event-log file as ``_initdb`` makes it, made once per process in a temporary file
    beside the runs' files (named so that Dagster's listing of them, ``*.db``, never includes it)."""

    def __init__(self, events: Any) -> None:
        self._events = events
        self._lock = threading.Lock()
        self._bytes: bytes | None = None

    def _made(self, folder: str) -> bytes:
        with self._lock:
            if self._bytes is None:
                path = os.path.join(folder, f".aimq-event-log-template-{os.getpid()}-{uuid.uuid4().hex}")
                engine = sqlalchemy.create_engine(f"sqlite:///{path}", poolclass=sqlalchemy.pool.NullPool)
                try:
                    self._events._initdb(engine)
                    engine.dispose()  # the last connection closed: SQLite folds the WAL into the file
                    with open(path, "rb") as made:
                        self._bytes = made.read()
                finally:
                    for leftover in (path, f"{path}-wal", f"{path}-shm"):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(leftover)
            return self._bytes

    def copy_to(self, path: str) -> None:
        data = self._made(os.path.dirname(path))
        temporary = f"{path}.{os.getpid()}-{uuid.uuid4().hex}.tmp"
        with open(temporary, "wb") as copy:
            copy.write(data)
        try:
            # A hard link never replaces a file: one another process made meanwhile stays (FileExistsError),
            # and a filesystem without hard links leaves the making to _initdb (another OSError).
            os.link(temporary, path)
        except OSError:
            pass
        finally:
            os.unlink(temporary)


def configured_class(module: str, class_name: str, config: dict[str, Any]) -> Any:
    """An instance of a configurable class (a run launcher ...) as dagster.yaml would make it: its
    config checked against its schema, env sources resolved."""
    return CONFIGURABLE_CLASS_DATA.load()(module, class_name, yaml.safe_dump(config)).rehydrate()


def code_server_run_health(run: dg.DagsterRun) -> Any:
    """Run monitoring's check of a run started in a code server (DefaultRunLauncher): running while
    the server at the run's address still has its process (GetCurrentRuns); failed when that server
    answers without it (it was restarted: its run processes went with its container); running, for
    now, while no server answers (the next check decides)."""
    result, status = RUN_LAUNCHER_TYPES.load(), WORKER_STATUS.load()
    info = run.tags.get(GRPC_INFO_TAG.load())
    if not info:
        return result(status.NOT_FOUND, msg="the run has no code server address")
    where = json.loads(info)
    client = GRPC_CLIENT.load()(
        host=where.get("host"), port=where.get("port"), socket=where.get("socket"), use_ssl=bool(where.get("use_ssl"))
    )
    try:
        answer = dg.deserialize_value(client.get_current_runs(), GET_CURRENT_RUNS_RESULT.load())
    except USER_CODE_UNREACHABLE.load() as exc:
        return result(status.RUNNING, msg=f"the code server does not answer: {exc}", transient=True)
    if run.run_id in answer.current_runs:
        return result(status.RUNNING)
    return result(status.FAILED, msg="the code server that started the run no longer has its process (restarted?)")


# Rows deleted per statement: a long-neglected instance may have very many purged partitions.
_CHECK_DELETE_CHUNK = 500


def delete_check_executions(instance: dg.DagsterInstance, asset_key: dg.AssetKey, partitions: list[str]) -> int:
    """Delete the asset check results (every check) of ``asset_key``'s ``partitions``; how many rows."""
    storage = instance.event_log_storage
    if not isinstance(storage, SQL_EVENT_LOG_STORAGE.load()):
        raise DagsterInternalsChanged(SQL_EVENT_LOG_STORAGE.changed(f"the event log is a {type(storage).__name__}"))
    table = ASSET_CHECK_EXECUTIONS_TABLE.load()
    for column in ("asset_key", "partition"):
        if column not in table.c:
            raise DagsterInternalsChanged(ASSET_CHECK_EXECUTIONS_TABLE.changed(f"it has no {column} column"))
    deleted = 0
    with storage.index_connection() as conn:
        for start in range(0, len(partitions), _CHECK_DELETE_CHUNK):
            chunk = partitions[start : start + _CHECK_DELETE_CHUNK]
            result = conn.execute(
                table.delete().where(table.c.asset_key == asset_key.to_string()).where(table.c.partition.in_(chunk))
            )
            deleted += result.rowcount or 0
    return deleted
