"""aimq_pipelines.code_server: what its forkserver preloads. multiprocessing ignores a preload that
fails to import, so a dagster upgrade that moves a module would make every run start cold without a
word; here it fails. (That runs really fork from the forkserver is checked where a run worker is
caught mid-run: tests/faults/test_run_worker_kill.py.)"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import pytest

from aimq_cli.instance import DAGSTER_YAML
from aimq_pipelines.code_server import PRELOAD, instance_modules


@pytest.mark.parametrize("module", PRELOAD)
def test_every_preloaded_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_the_instance_modules_are_those_of_the_dagster_yaml_aimq_up_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copyfile(DAGSTER_YAML, tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    modules = instance_modules()
    assert "aimq_pipelines.run_coordinator" in modules
    assert "aimq_pipelines.sqlite_storage" in modules  # the storage class DagsterInstance.from_ref imports
    for module in modules:
        importlib.import_module(module)


def test_without_dagster_home_nothing_more_is_preloaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert instance_modules() == []
