"""aimq_pipelines.dagster_internals: each Dagster internal AIMQ uses still exists in the pinned dagster,
and when one does not, the failure names the use, why it exists and what breaks (the upgrade check of
docs/architecture.md, "Upgrading Dagster"); and no other module imports Dagster's internals."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys

import dagster as dg
import pytest
import sqlalchemy

from aimq_pipelines import dagster_internals
from aimq_pipelines.dagster_internals import INTERNALS, DagsterInternalsChanged, Internal
from tests.helpers.paths import REPO

PACKAGES = ("aimq_cli", "aimq_pipelines", "aimq_serving", "aimq_tabular")


@pytest.mark.parametrize("internal", INTERNALS, ids=lambda i: f"{i.module}.{i.name}")
def test_every_internal_loads(internal: Internal) -> None:
    assert internal.load() is not None


def test_every_internal_is_listed() -> None:
    defined = [v for v in vars(dagster_internals).values() if isinstance(v, Internal)]
    assert sorted(defined, key=id) == sorted(INTERNALS, key=id)


@pytest.mark.parametrize("module", dagster_internals.RUN_PATH_MODULES)
def test_every_run_path_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_the_api_server_constructor_still_sets_its_run_process_context() -> None:
    # replace_run_process_context replaces this attribute after the constructor ran; a Dagster that
    # renamed it would make `aimq up` refuse to start (checked there too), so say it here first.
    source = inspect.getsource(dagster_internals.API_SERVER.load().__init__)
    assert "self._mp_ctx = " in source, dagster_internals.API_SERVER.changed("its constructor no longer sets _mp_ctx")


def test_a_changed_internal_fails_with_what_uses_it_and_what_breaks() -> None:
    gone = Internal("dagster._core.storage.dagster_run", "NO_SUCH", used_by="a module", why="a reason", breaks="it")
    with pytest.raises(DagsterInternalsChanged) as raised:
        gone.load()
    message = str(raised.value)
    assert "dagster._core.storage.dagster_run.NO_SUCH" in message
    assert "Used by a module: a reason. If it is not adapted: it." in message
    assert "Upgrading Dagster" in message


def test_no_other_module_imports_dagster_internals() -> None:
    offenders = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if path == REPO / "aimq_pipelines" / "dagster_internals.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                offenders += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names if n.startswith("dagster._")]
    assert not offenders, offenders


def test_delete_check_executions_deletes_only_the_given_partitions_of_the_asset() -> None:
    key = dg.AssetKey("scored_uploads")
    with dg.instance_for_test() as instance:
        for asset, partition in ((key, "a"), (key, "b"), (dg.AssetKey("other"), "a")):
            instance.report_runless_asset_event(
                dg.AssetCheckEvaluation(asset_key=asset, check_name="c", passed=True, partition=partition)
            )
        assert dagster_internals.delete_check_executions(instance, key, ["a"]) == 1

        def left(asset: dg.AssetKey) -> list[str | None]:
            history = instance.event_log_storage.get_asset_check_execution_history(dg.AssetCheckKey(asset, "c"), 10)
            return [r.partition for r in history]

        assert left(key) == ["b"] and left(dg.AssetKey("other")) == ["a"]


def test_run_processes_share_one_reading_of_the_storage_migrations() -> None:
    """What the forkserver imports (aimq_pipelines.warm_runs): every alembic config of Dagster's SQL
    storages gets the one script directory read there, which knows the head revision; in a process of
    its own, as the forkserver is."""
    script = """
from alembic.script import ScriptDirectory
import aimq_pipelines.warm_runs
from dagster._core.storage.sql import get_alembic_config
from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.runs.sqlite import sqlite_run_storage
from dagster._core.storage.schedules.sqlite import sqlite_schedule_storage
dirs = {id(ScriptDirectory.from_config(get_alembic_config(m.__file__)))
        for m in (sqlite_event_log, sqlite_run_storage, sqlite_schedule_storage)}
assert len(dirs) == 1, dirs
print(ScriptDirectory.from_config(get_alembic_config(sqlite_event_log.__file__)).get_current_head())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), done.stderr  # the head revision
    assert "will read Dagster's storage migrations each" not in done.stderr


def test_a_postgres_storage_without_its_engine_fails_naming_the_pooled_storage() -> None:
    class Renamed:  # a Dagster whose storages no longer keep their engine in `_engine`
        engine = None

    with pytest.raises(DagsterInternalsChanged, match="aimq_pipelines.postgres_storage"):
        dagster_internals.replace_postgres_engine(Renamed(), sqlalchemy.create_engine("sqlite://"))
