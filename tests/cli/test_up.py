"""`aimq up` brings up the Dagster webserver, the daemon and the API; Ctrl-C or SIGTERM stops all of
them (and what they started) within the bound of ``aimq_cli.supervise``, even when `aimq up`
was started with both signals ignored; SIGKILL'd, its watchdog stops them within the same bound.
Each case also runs with every core busy (``tests.helpers.contention``)."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from aimq_cli.supervise import KILL_WAIT_S, STOP_GRACE_S, group_members
from aimq_cli.up import MEMORY_CHECK_S
from aimq_serving.model_store import ModelStore
from tests.helpers.contention import busy_cpus
from tests.helpers.ports import free_port

pytestmark = pytest.mark.slow

# The stated bound (supervise.py), plus room for the scheduler of a contended machine to run
# `aimq up` (or its watchdog) at all: a hang, not a slow stop, is what this catches.
STOP_BOUND_S = STOP_GRACE_S + KILL_WAIT_S
SCHEDULING_ROOM_S = 30.0
# `aimq up --start-timeout`: starting the webserver, the daemon (and its code server) and the API
# on 2 busy cores.
START_TIMEOUT_S = 300.0
BANNER = "Ctrl-C stops everything"


def _ignore_stop_signals() -> None:
    # What the issue found: `aimq up` started by a process that ignores both (inherited SIG_IGN).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


# What `aimq up` starts, by a word of each command line (the watchdog is aimq_cli.supervise).
SERVICES = ("aimq_pipelines.code_server", "dagster-webserver", "dagster-daemon", "uvicorn", "aimq_cli.supervise")


@dataclass
class Up:
    proc: subprocess.Popen
    api_port: int
    dagster_port: int
    lines: queue.Queue = field(default_factory=queue.Queue)
    # Every process group `aimq up` started (its services and its watchdog lead one each).
    groups: set[int] = field(default_factory=set)

    def wait_banner(self) -> str:
        output, deadline = [], time.monotonic() + START_TIMEOUT_S + SCHEDULING_ROOM_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                assert self.proc.poll() is None, "".join(output)
                continue
            output.append(line)
            if BANNER in line:
                return "".join(output)
        raise AssertionError(f"no banner within {START_TIMEOUT_S + SCHEDULING_ROOM_S:.0f} s:\n{''.join(output)}")

    def record_groups(self) -> dict[str, int]:
        """The services and the watchdog, by what they run."""
        found = {}
        for pid in _children(self.proc.pid):
            self.groups.add(os.getpgid(pid))
            command = _cmdline(pid)
            for name in SERVICES:
                if name in command:
                    found[name] = pid
        return found

    def live(self) -> dict[int, list[int]]:
        return {g: members for g in self.groups if (members := group_members(g))}


@pytest.fixture
def up(trained_store: ModelStore, dagster_home: Path, request: pytest.FixtureRequest) -> Iterator[Up]:
    """`aimq up`, with the settings of an indirect parameter added to the environment, if any."""
    api_port, dagster_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("aimq")),
            "up",
            "--api-port",
            str(api_port),
            "--dagster-port",
            str(dagster_port),
            "--start-timeout",
            str(START_TIMEOUT_S),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **getattr(request, "param", {})},
        preexec_fn=_ignore_stop_signals,
    )
    running = Up(proc, api_port, dagster_port)
    threading.Thread(target=lambda: [running.lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        yield running
    finally:
        # Whatever the test did: nothing it started survives it.
        if proc.poll() is None:
            running.record_groups()  # while they are still its children
            proc.kill()
            proc.wait()
        for pgid in running.groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _serving(up: Up) -> None:
    output = up.wait_banner()
    assert f"Dagster UI  http://127.0.0.1:{up.dagster_port}" in output, output
    assert "training them first" not in output  # models exist: no retraining on start
    assert httpx.get(f"http://127.0.0.1:{up.api_port}/health", timeout=10).json() == {"status": "ok"}
    assert httpx.get(f"http://127.0.0.1:{up.dagster_port}/server_info", timeout=10).status_code == 200
    found = up.record_groups()
    assert set(found) == set(SERVICES), found
    # The forkserver the runs fork from runs in the code server's group: it must go with it.
    code_server_group = group_members(found["aimq_pipelines.code_server"])
    assert any("multiprocessing.forkserver" in _cmdline(pid) for pid in code_server_group), code_server_group


def _nothing_left(up: Up) -> None:
    deadline = time.monotonic() + STOP_BOUND_S + SCHEDULING_ROOM_S
    while up.live() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not up.live(), {g: [_cmdline(p) for p in pids] for g, pids in up.live().items()}
    for port in (up.api_port, up.dagster_port):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


def _contention(contended: bool):
    return busy_cpus() if contended else nullcontext()


# SIGTERM takes the same path as Ctrl-C in `aimq up`: one contended run of the two (each start of
# `aimq up` costs a minute of CI on 2 busy cores).
@pytest.mark.parametrize(
    ("stop", "contended"),
    [
        pytest.param(signal.SIGINT, False, id="ctrl-c-quiet"),
        pytest.param(signal.SIGTERM, False, id="sigterm-quiet"),
        pytest.param(signal.SIGINT, True, id="ctrl-c-contended"),
    ],
)
def test_up_serves_and_a_stop_signal_stops_everything(up: Up, stop: signal.Signals, contended: bool) -> None:
    with _contention(contended):
        _serving(up)
        up.proc.send_signal(stop)
        up.proc.wait(timeout=STOP_BOUND_S + SCHEDULING_ROOM_S)
        assert up.proc.returncode == 0
        _nothing_left(up)


@pytest.mark.parametrize("contended", [False, True], ids=["quiet", "contended"])
def test_killed_up_leaves_nothing_running(up: Up, contended: bool) -> None:
    with _contention(contended):
        _serving(up)
        up.proc.kill()
        up.proc.wait()
        _nothing_left(up)


@pytest.mark.parametrize("up", [{"AIMQ_DAEMON_MAX_RSS_MB": "1"}], indirect=True, ids=["bound-1-MB"])
def test_a_daemon_past_its_memory_bound_is_restarted(up: Up) -> None:
    """Dagster's daemon grows by itself (dagster-io/dagster#32070): past AIMQ_DAEMON_MAX_RSS_MB `aimq
    up` stops it and starts another (here at once: every daemon is past 1 MB); the rest keeps serving
    and a stop still leaves nothing behind."""
    _serving(up)
    first = up.record_groups()["dagster-daemon"]
    output, deadline = [], time.monotonic() + MEMORY_CHECK_S + STOP_BOUND_S + SCHEDULING_ROOM_S
    while not any("restarting it" in line for line in output):
        assert time.monotonic() < deadline, "".join(output)
        try:
            output.append(up.lines.get(timeout=1))
        except queue.Empty:
            assert up.proc.poll() is None, "".join(output)
    assert "more than AIMQ_DAEMON_MAX_RSS_MB (1)" in output[-1]
    while up.record_groups().get("dagster-daemon") in (None, first):
        assert time.monotonic() < deadline, "no new daemon"
        time.sleep(0.2)
    assert not group_members(first)  # the old one is gone, with its group
    assert httpx.get(f"http://127.0.0.1:{up.api_port}/health", timeout=10).json() == {"status": "ok"}
    up.proc.send_signal(signal.SIGTERM)
    up.proc.wait(timeout=STOP_BOUND_S + SCHEDULING_ROOM_S)
    assert up.proc.returncode == 0
    _nothing_left(up)
