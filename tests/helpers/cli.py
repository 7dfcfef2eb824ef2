"""Running the installed ``aimq`` command as a user does, and reading its one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

AIMQ = str(Path(sys.executable).with_name("aimq"))


def run_aimq(*args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
    """``aimq ARGS`` with this session's environment plus ``env`` (e.g. AIMQ_API_URL=...)."""
    return subprocess.run(
        [AIMQ, *args], capture_output=True, text=True, timeout=300, env={**os.environ, **env}, input=stdin
    )


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The ``aimq: error: ...`` line of a failed command, checked to be its only output of note."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("aimq: error: "), proc.stderr
    return lines[-1]
