"""`aimq models` and `aimq rollback` against the real Redis."""

from __future__ import annotations

from aimq_serving.model_store import ModelStore
from tests.helpers.cli import run_aimq


def test_models_lists_the_versions(trained_store: ModelStore) -> None:
    proc = run_aimq("models")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["group", "version", "current"]
    assert sum(1 for line in lines[1:] if "*" in line) == 3


def test_rollback_of_a_group_without_model_is_a_clear_error(settings) -> None:
    proc = run_aimq("rollback", "B", AIMQ_REDIS_PREFIX=settings.redis_prefix + "-empty")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "aimq: error: model group B has no model yet; materialize the model chain first"
