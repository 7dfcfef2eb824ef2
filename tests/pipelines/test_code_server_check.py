"""The code server's health check (aimq_pipelines.code_server_check) fails while the code location
failed to load, where `dagster api grpc-health-check` (the check compose used before) passes; it
passes once the location loads. Against real `dagster code-server start` processes. That compose and
Kubernetes use it: tests/deploy/test_compose.py and tests/deploy/test_k8s.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.ports import free_port

pytestmark = pytest.mark.slow


CHECK = [sys.executable, "-m", "aimq_pipelines.code_server_check"]
GOOD = """
import dagster as dg

@dg.asset
def one() -> int:
    return 1

defs = dg.Definitions(assets=[one])
"""
BROKEN = """
import dagster as dg

raise RuntimeError("settings missing: AIMQ_SIGNING_KEY")
"""


def code_server(tmp_path: Path, source: str) -> Iterator[int]:
    module = f"location_{abs(hash(source))}"
    (tmp_path / f"{module}.py").write_text(source)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "code-server",
            "start",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-m",
            module,
            "--location-name",
            "test",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port
    finally:
        process.terminate()
        try:
            # Dagster's `code-server start` outlived a 30 s wait after SIGTERM in both tests (CI, 0012a65):
            # nothing of it is under test here, and the kill below ends it.
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def settle(port: int, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Our check's result once the server answers and has finished loading (or failed to)."""
    deadline = time.monotonic() + timeout_s
    while True:
        proc = subprocess.run([*CHECK, "--port", str(port)], capture_output=True, text=True, check=False)
        if "unreachable" not in proc.stderr or time.monotonic() > deadline:
            return proc
        time.sleep(1)


@pytest.fixture
def broken_server(tmp_path: Path) -> Iterator[int]:
    yield from code_server(tmp_path, BROKEN)


@pytest.fixture
def good_server(tmp_path: Path) -> Iterator[int]:
    yield from code_server(tmp_path, GOOD)


def test_a_location_that_failed_to_load_is_unhealthy(broken_server: int) -> None:
    ours = settle(broken_server)
    assert ours.returncode == 1
    assert "code location failed to load" in ours.stderr and "settings missing: AIMQ_SIGNING_KEY" in ours.stderr
    # The gRPC health service reports the same server as serving: why it is not the health check.
    grpc = subprocess.run(
        [sys.executable, "-m", "dagster", "api", "grpc-health-check", "-p", str(broken_server)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert grpc.returncode == 0, grpc.stdout + grpc.stderr


def test_a_loaded_location_is_healthy(good_server: int) -> None:
    ours = settle(good_server)
    assert ours.returncode == 0, ours.stderr
    assert "loaded" in ours.stdout


def test_nothing_listening_is_unhealthy() -> None:
    proc = subprocess.run(
        [*CHECK, "--port", str(free_port())], capture_output=True, text=True, check=False, timeout=120
    )
    assert proc.returncode == 1 and "unreachable" in proc.stderr
