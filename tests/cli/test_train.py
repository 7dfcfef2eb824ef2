"""`aimq train` against the real Redis and Dagster: the code location's train_models job, in process."""

from __future__ import annotations

from pathlib import Path

from aimq_serving.model_store import ModelStore
from tests.helpers.cli import run_aimq


def test_train_one_group_then_rollback(trained_store: ModelStore, dagster_home: Path) -> None:
    before = trained_store.current_version("C")
    proc = run_aimq("train", "--group", "C")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"group C: version {before + 1} is current" in proc.stdout
    assert trained_store.current_version("C") == before + 1
    assert trained_store.current_version("A") != 0
    proc = run_aimq("rollback", "C")
    assert proc.returncode == 0 and f"group C: version {before} is current" in proc.stdout
    assert trained_store.current_version("C") == before
