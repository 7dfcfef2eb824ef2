"""`aimq up` brings up the Dagster webserver, the daemon and the API, and Ctrl-C stops all of them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from aimq_serving.model_store import ModelStore

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def test_up_serves_and_ctrl_c_stops_everything(trained_store: ModelStore, dagster_home: Path) -> None:
    api_port, dagster_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("aimq")), "up", "--api-port", str(api_port), "--dagster-port", str(dagster_port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=os.environ.copy(),
    )
    try:
        lines = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        output = "".join(lines)
        assert f"Dagster UI  http://127.0.0.1:{dagster_port}" in output, output
        assert "training them first" not in output  # models exist: no retraining on start
        assert httpx.get(f"http://127.0.0.1:{api_port}/health").json() == {"status": "ok"}
        assert httpx.get(f"http://127.0.0.1:{dagster_port}/server_info").status_code == 200
        started = _children(proc.pid)
        assert len(started) == 3
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    for pid in started:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for port in (api_port, dagster_port):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
