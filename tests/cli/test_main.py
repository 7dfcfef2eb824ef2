"""The entry points (the ``aimq`` script, ``python -m aimq_cli``) and how `aimq` reports a failure."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers.cli import AIMQ

REDIS_DOWN = {"AIMQ_REDIS_URL": "redis://127.0.0.1:1/0", "AIMQ_REDIS_TIMEOUT_S": "0.5"}


@pytest.mark.parametrize("command", [[AIMQ], [sys.executable, "-m", "aimq_cli"]], ids=["script", "python-m"])
def test_redis_down_is_one_readable_line(command: list[str]) -> None:
    proc = subprocess.run(
        [*command, "models"], capture_output=True, text=True, timeout=300, env={**os.environ, **REDIS_DOWN}
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("aimq: error: model store unavailable (Redis)")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_usage_mistake_is_one_line_with_a_pointer_to_help() -> None:
    proc = subprocess.run([AIMQ, "train", "--group", "Z"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert line.startswith("aimq: error: argument --group: invalid choice: 'Z'") and line.endswith(
        "(see: aimq train --help)"
    )
    assert len(proc.stderr.strip().splitlines()) == 1
