"""aimq_pipelines.postgres_storage against a real PostgreSQL (a private server, tests/helpers/private_postgres):
Dagster's storage of compose and Kubernetes keeps its connections, a forked run process never shares
its parent's, and a restarted server is reconnected to without a failed call."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy
import yaml

from aimq_pipelines.postgres_storage import POOL_SIZE, PooledPostgresStorage
from tests.helpers import private_postgres
from tests.helpers.paths import REPO
from tests.helpers.private_postgres import PrivatePostgres

pytestmark = private_postgres.needs_postgres_server


@pytest.fixture(scope="module")
def server() -> Iterator[PrivatePostgres]:
    server = private_postgres.start()
    yield server
    server.stop()


@pytest.fixture
def instance(server: PrivatePostgres, tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """An instance configured as deploy/dagster/cluster.yaml configures compose's and Kubernetes'."""
    config = {
        "storage": {
            "custom": {
                "module": "aimq_pipelines.postgres_storage",
                "class": "PooledPostgresStorage",
                "config": {"postgres_url": server.url},
            }
        }
    }
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        yield instance


@dg.asset
def one_row() -> int:
    return 1


def test_a_run_and_the_calls_after_it_reuse_the_storages_connections(
    instance: dg.DagsterInstance, server: PrivatePostgres
) -> None:
    dg.materialize([one_row], instance=instance)  # creates the tables, fills each storage's pool
    opened = server.connections_opened()

    result = dg.materialize([one_row], instance=instance)
    for _ in range(20):
        instance.get_runs(limit=5)
        instance.get_latest_materialization_event(dg.AssetKey("one_row"))
        instance.all_instigator_state()

    assert result.success
    assert len(instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))) == 2
    # Dagster's own class (NullPool) opens one per call: ~100 for this run's events and the 60 calls.
    assert server.connections_opened() - opened <= 3 * POOL_SIZE


@pytest.mark.parametrize("shipped", ["deploy/compose/dagster.yaml", "k8s/base/dagster/dagster.yaml"])
def test_the_shipped_instances_store_in_pooled_postgres(
    shipped: str, server: PrivatePostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The storage block compose and Kubernetes deploy, with their DAGSTER_POSTGRES_* variables."""
    url = sqlalchemy.make_url(server.url)
    for key, value in {
        "HOSTNAME": url.host,
        "PORT": url.port,
        "USER": url.username,
        "PASSWORD": url.password,
        "DB": url.database,
    }.items():
        monkeypatch.setenv(f"DAGSTER_POSTGRES_{key}", str(value))
    storage = yaml.safe_load((REPO / shipped).read_text())["storage"]
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump({"storage": storage}))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        instance.get_runs(limit=1)
        opened = server.connections_opened()
        result = dg.materialize([one_row], instance=instance)
        assert result.success
        assert server.connections_opened() - opened <= POOL_SIZE


def test_another_instance_in_the_process_opens_no_connection(
    instance: dg.DagsterInstance, server: PrivatePostgres, tmp_path: Path
) -> None:
    """The code server makes an instance for each sensor evaluation: it shares the process's pool, and
    the tables are checked once per process, not once per instance."""
    instance.get_runs(limit=1)
    opened = server.connections_opened()
    for _ in range(3):
        with dg.DagsterInstance.from_config(str(tmp_path)) as another:
            another.get_runs(limit=1)
            another.all_instigator_state()
    assert server.connections_opened() == opened


def _backend_pid(storage: PooledPostgresStorage) -> int:
    with storage.run_storage.connect() as conn:
        return conn.execute(sqlalchemy.text("select pg_backend_pid()")).scalar_one()


def test_a_forked_process_connects_on_its_own_and_leaves_its_parents_connection_alone(
    server: PrivatePostgres,
) -> None:
    storage = PooledPostgresStorage(server.url)
    parent = _backend_pid(storage)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the code server's forkserver forks each run process like this
        code = 1
        try:
            os.write(write, str(_backend_pid(storage)).encode())
            gc.collect()  # whatever the child dropped is closed now, which must be its own only
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    child_backend = int(os.read(read, 64) or b"0")
    os.close(read)
    _, status = os.waitpid(child, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert child_backend not in (0, parent)  # its own session
    # The parent's pooled sessions are all alive: none had to be opened again (pre-ping would reopen one
    # the child had closed), and none is the child's.
    opened = server.connections_opened()
    assert child_backend not in {_backend_pid(storage) for _ in range(2 * POOL_SIZE)}
    assert server.connections_opened() == opened


def test_a_restarted_server_is_reconnected_to_without_a_failed_call(server: PrivatePostgres) -> None:
    storage = PooledPostgresStorage(server.url)
    before = _backend_pid(storage)
    assert storage.run_storage.get_runs() is not None

    server.restart()  # every kept connection is now closed by the server

    assert storage.run_storage.get_runs() is not None
    assert storage.event_log_storage.get_latest_materialization_events([dg.AssetKey("x")]) is not None
    assert _backend_pid(storage) != before
