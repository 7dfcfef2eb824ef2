"""aimq_pipelines.dagster_internals: each Dagster internal AIMQ uses still exists in the pinned dagster,
and when one does not, the failure names the use, why it exists and what breaks (the upgrade check of
docs/architecture.md, "Upgrading Dagster"); and no other module imports Dagster's internals."""

from __future__ import annotations

import ast
import importlib
import inspect

import pytest

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
