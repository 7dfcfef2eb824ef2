"""The `aimq` command line against the real Redis and Dagster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from aimq_serving.model_store import ModelStore

AIMQ = str(Path(sys.executable).with_name("aimq"))


def _aimq(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([AIMQ, *args], capture_output=True, text=True, timeout=300, env={**os.environ, **env})


def test_models_lists_the_versions(trained_store: ModelStore) -> None:
    proc = _aimq("models")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["group", "version", "current"]
    assert sum(1 for line in lines[1:] if "*" in line) == 3


def test_redis_down_is_one_readable_line() -> None:
    proc = _aimq("models", AIMQ_REDIS_URL="redis://127.0.0.1:1/0", AIMQ_REDIS_TIMEOUT_S="0.5")
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("aimq: error: model store unavailable (Redis)")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_train_one_group_then_rollback(trained_store: ModelStore, dagster_home: Path) -> None:
    before = trained_store.current_version("C")
    proc = _aimq("train", "--group", "C")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"group C: version {before + 1} is current" in proc.stdout
    assert trained_store.current_version("C") == before + 1
    assert trained_store.current_version("A") != 0
    proc = _aimq("rollback", "C")
    assert proc.returncode == 0 and f"group C: version {before} is current" in proc.stdout
    assert trained_store.current_version("C") == before


def test_rollback_of_a_group_without_model_is_a_clear_error(settings) -> None:
    proc = _aimq("rollback", "B", AIMQ_REDIS_PREFIX=settings.redis_prefix + "-empty")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "aimq: error: model group B has no model yet; materialize the model chain first"
