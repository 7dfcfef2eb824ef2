"""aimq_pipelines.sqlite_storage: the local instance's SQLite storage keeps its connections (Dagster's opens
one per call), a forked child never touches its parent's, a purged run's file is let go, and it is the
same storage: the files of Dagster's default, readable by Dagster's own class."""

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy

from aimq_pipelines import dagster_internals
from aimq_pipelines.sqlite_storage import ENGINES, KeptSqliteEngines
from tests.helpers.local_home import seed_local_home


@pytest.fixture
def connections_opened() -> Iterator[list[str]]:
    """The SQLite database files every engine of this process connects to, one entry per connection."""
    opened: list[str] = []

    def on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        opened.append(dbapi_connection.execute("PRAGMA database_list").fetchone()[2])

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "connect", on_connect)
    yield opened
    sqlalchemy.event.remove(sqlalchemy.engine.Engine, "connect", on_connect)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return seed_local_home(tmp_path / "home")


@dg.asset
def one_row(context: dg.AssetExecutionContext) -> int:
    for n in range(20):  # a step's log lines: each an event the run's own file stores
        context.log.info(f"line {n}")
    return 1


def events_in(instance: dg.DagsterInstance, run_id: str) -> int:
    return len(instance.all_logs(run_id))


def test_a_run_stores_its_events_over_kept_connections(home: Path, connections_opened: list[str]) -> None:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        dg.materialize([one_row], instance=instance)  # the index and the run storage connected once
        connections_opened.clear()
        result = dg.materialize([one_row], instance=instance)
        stored = events_in(instance, result.run_id)
    assert result.success and stored > 20
    # The new run's file, and nothing else again; Dagster's class opens a connection per event (below).
    assert len(connections_opened) <= 3, connections_opened


def test_dagsters_own_class_opens_a_connection_per_call(tmp_path: Path, connections_opened: list[str]) -> None:
    """What the test above guards against: the same run on Dagster's default storage."""
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        dg.materialize([one_row], instance=instance)
        connections_opened.clear()
        result = dg.materialize([one_row], instance=instance)
        stored = events_in(instance, result.run_id)
    assert len(connections_opened) >= stored


def test_the_files_are_dagsters_own(home: Path) -> None:
    """Same directory layout and tables: a home written through kept connections opens with Dagster's
    default storage (an instance seeded before, or a user going back), and the other way round."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        first = dg.materialize([one_row], instance=instance).run_id
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # Dagster's default storage
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_run_by_id(first).status == dg.DagsterRunStatus.SUCCESS
        assert events_in(instance, first) > 20
        second = dg.materialize([one_row], instance=instance).run_id
    seed_local_home(home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert {r.run_id for r in instance.get_runs()} == {first, second}
        assert instance.get_latest_materialization_event(one_row.key).run_id == second


def schema(path: Path) -> tuple[list[tuple[str, str, str]], str, list[tuple[str]]]:
    """A SQLite file's tables and indexes, journal mode and alembic revision."""
    with sqlite3.connect(path) as connection:
        master = connection.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    return master, mode, revision


@pytest.fixture
def initdb_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call of Dagster's ``_initdb`` on an event log (the alembic scripts loaded, and for a new file
    its tables made and stamped), by the file's path."""
    calls: list[str] = []
    original = dagster_internals.SQLITE_EVENT_LOG_STORAGE.load()._initdb

    def counted(self: object, engine: sqlalchemy.engine.Engine, *args: object, **kwargs: object) -> None:
        calls.append(engine.url.database)
        original(self, engine, *args, **kwargs)

    monkeypatch.setattr(dagster_internals.SQLITE_EVENT_LOG_STORAGE.load(), "_initdb", counted)
    return calls


def test_a_new_runs_file_is_the_one_dagster_makes(home: Path, tmp_path: Path) -> None:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        dg.materialize([one_row], instance=instance)
        ours = dg.materialize([one_row], instance=instance).run_id  # its file a copy of this process's template
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        theirs = dg.materialize([one_row], instance=instance).run_id
    made = schema(home / "history" / "runs" / f"{ours}.db")
    assert made == schema(tmp_path / "history" / "runs" / f"{theirs}.db")
    assert made[1] == "wal" and len(made[2]) == 1
    # No template or copy left beside the runs' files.
    left = [p.name for p in (home / "history" / "runs").iterdir() if not p.name.endswith((".db", ".db-wal", ".db-shm"))]
    assert left == []


def test_alembic_runs_once_per_process_not_per_run_file(home: Path, initdb_calls: list[str]) -> None:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        dg.materialize([one_row], instance=instance)
        initdb_calls.clear()
        runs = [dg.materialize([one_row], instance=instance).run_id for _ in range(3)]
        assert initdb_calls == []  # the template is made: each new file a copy
    with dg.DagsterInstance.from_config(str(home)) as instance:  # another process opening them
        assert all(events_in(instance, run_id) > 20 for run_id in runs)
        assert initdb_calls == []  # stamped files are taken as made


def test_dagsters_own_class_runs_alembic_for_every_run_file(tmp_path: Path, initdb_calls: list[str]) -> None:
    """What the test above guards against."""
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        dg.materialize([one_row], instance=instance)
        initdb_calls.clear()
        for _ in range(3):
            dg.materialize([one_row], instance=instance)
    assert len(initdb_calls) >= 3


def test_a_file_without_its_revision_is_made_by_dagster(home: Path, initdb_calls: list[str]) -> None:
    """An empty file where a run's should be (another process began making it, or a crash left it):
    Dagster's own making, with its retries."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run_id = dg.materialize([one_row], instance=instance).run_id
    path = home / "history" / "runs" / "0123-empty.db"
    path.touch()
    initdb_calls.clear()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.all_logs("0123-empty") == [] and events_in(instance, run_id) > 20
    assert initdb_calls == [str(path)]
    assert schema(path) == schema(home / "history" / "runs" / f"{run_id}.db")


def test_a_forked_child_uses_connections_of_its_own_and_leaves_the_parents_alone(home: Path) -> None:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run_id = dg.materialize([one_row], instance=instance).run_id
        before = events_in(instance, run_id)
        kept = dict(ENGINES._engines)
        assert kept, "the parent keeps engines"
        pid = os.fork()
        if pid == 0:  # the child: its own connections (a kept one would be the parent's SQLite handle)
            code = 1
            try:
                if not ENGINES._engines and ENGINES._inherited[-1] == kept:
                    instance.report_engine_event("from the child", instance.get_run_by_id(run_id))
                    code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The parent's kept connections still work, and see the child's write.
        instance.report_engine_event("from the parent", instance.get_run_by_id(run_id))
        messages = [e.message for e in instance.all_logs(run_id)]
        assert len(messages) == before + 2 and messages[-2:] == ["from the child", "from the parent"]
        assert all(ENGINES._engines.get(url) is engine for url, engine in kept.items())


def test_deleting_a_runs_files_closes_this_process_connections_to_them(home: Path) -> None:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run_id = dg.materialize([one_row], instance=instance).run_id
        shard = instance.event_log_storage.conn_string_for_shard(run_id)
        assert shard in ENGINES._engines
        instance.delete_run(run_id)
        dagster_internals.delete_run_files(instance, run_id)
        assert shard not in ENGINES._engines
        assert not list((home / "history" / "runs").glob(f"{run_id}.db*"))
        assert instance.all_logs(run_id) == []  # read again: a new empty file, as Dagster's class does


def test_the_least_recently_used_database_is_let_go(tmp_path: Path) -> None:
    engines = KeptSqliteEngines(max_databases=2)
    urls = [f"sqlite:///{tmp_path / name}.db" for name in "abc"]
    first = engines.get(urls[0])
    with first.connect() as connection:
        connection.execute(sqlalchemy.text("select 1"))
    assert first.pool.checkedin() == 1
    engines.get(urls[1])
    assert engines.get(urls[0]) is first  # used again: now the most recent
    engines.get(urls[2])  # urls[1] goes
    assert list(engines._engines) == [urls[0], urls[2]]
    engines.get(urls[1])  # urls[0] goes, its idle connection closed
    assert urls[0] not in engines._engines and first.pool.checkedin() == 0


def test_a_storage_whose_event_log_lost_its_connect_fails_naming_the_use(home: Path) -> None:
    with dg.DagsterInstance.from_config(str(home)) as instance:

        class Renamed:
            run_storage = instance.run_storage
            schedule_storage = instance.schedule_storage
            event_log_storage = object()

        with pytest.raises(dagster_internals.DagsterInternalsChanged, match="aimq_pipelines.sqlite_storage"):
            dagster_internals.keep_sqlite_connections(Renamed(), ENGINES)
