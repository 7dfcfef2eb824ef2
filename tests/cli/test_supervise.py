"""The pieces `aimq up` stops its services with, on real processes: the stop of a process group
(SIGTERM, grace, SIGKILL), the parent-death signal, and the watchdog."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from aimq_cli.supervise import Watchdog, die_with_parent, group_members, hear_sigterm, stop_groups

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal and /proc: Linux")

# A process group: a leader and one child of its own, both ignoring SIGTERM when asked to.
_GROUP = """
import signal, subprocess, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\\n"
    "if sys.argv[1] == 'stubborn': signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
    "time.sleep(600)", sys.argv[1]])
print(child.pid, flush=True)
time.sleep(600)
"""


def _wait_gone(pgid: int, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not group_members(pgid)


@pytest.fixture
def groups() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:  # whatever the test did
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _start_group(groups: list[subprocess.Popen], kind: str) -> tuple[subprocess.Popen, int]:
    # hear_sigterm: a group that starts deaf to SIGTERM (a mask inherited from the test process) would
    # test nothing of stop_groups.
    proc = subprocess.Popen(
        [sys.executable, "-c", _GROUP, kind],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=hear_sigterm,
    )
    groups.append(proc)
    child = int(proc.stdout.readline())
    assert sorted(group_members(proc.pid)) == sorted([proc.pid, child])
    return proc, child


def test_stop_groups_terminates_then_kills_what_ignores_sigterm(groups: list[subprocess.Popen]) -> None:
    polite, _ = _start_group(groups, "polite")
    stubborn, _ = _start_group(groups, "stubborn")
    killed = stop_groups([polite.pid, stubborn.pid], grace_s=2.0, reap=lambda: [p.poll() for p in groups])
    assert killed == [stubborn.pid]
    for proc in (polite, stubborn):
        proc.wait(timeout=10)  # dead already (a zombie is no member); this collects the status
    assert polite.returncode == -signal.SIGTERM and stubborn.returncode == -signal.SIGKILL
    assert not group_members(polite.pid) and not group_members(stubborn.pid)  # the children too


def test_a_child_started_with_die_with_parent_stops_when_its_parent_is_killed() -> None:
    parent_code = (
        "import os, subprocess, sys, time\n"
        "from aimq_cli.supervise import die_with_parent\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],\n"
        "                         start_new_session=True, preexec_fn=die_with_parent(os.getpid()))\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        assert group_members(child) == [child]
        parent.kill()
        parent.wait()
        assert _wait_gone(child), "the child outlived its parent"
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_die_with_parent_is_a_no_op_for_a_living_parent() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "print('ok')"],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent(os.getpid()),
    )
    assert proc.communicate(timeout=60)[0] == "ok\n" and proc.returncode == 0


def test_the_watchdog_stops_the_groups_when_its_pipe_closes_without_a_release(groups: list[subprocess.Popen]) -> None:
    polite, child = _start_group(groups, "polite")
    stubborn, _ = _start_group(groups, "stubborn")
    watchdog = Watchdog(grace_s=2.0)
    watchdog.watch(polite.pid)
    watchdog.watch(stubborn.pid)
    watchdog.proc.stdin.close()  # what the death of `aimq up` does to the pipe
    assert watchdog.proc.wait(timeout=60) == 0
    for proc in (polite, stubborn):
        proc.wait(timeout=10)
    assert _wait_gone(polite.pid) and _wait_gone(stubborn.pid)
    assert polite.returncode == -signal.SIGTERM and stubborn.returncode == -signal.SIGKILL


def test_the_watchdog_leaves_a_forgotten_group_alone(groups: list[subprocess.Popen]) -> None:
    """`aimq up` restarted a service: its old group number may belong to someone else later."""
    forgotten, child = _start_group(groups, "polite")
    watched, _ = _start_group(groups, "polite")
    watchdog = Watchdog(grace_s=2.0)
    watchdog.watch(forgotten.pid)
    watchdog.watch(watched.pid)
    watchdog.forget(forgotten.pid)
    watchdog.proc.stdin.close()
    assert watchdog.proc.wait(timeout=60) == 0
    watched.wait(timeout=10)
    assert forgotten.poll() is None and sorted(group_members(forgotten.pid)) == sorted([forgotten.pid, child])


def test_a_released_watchdog_touches_nothing(groups: list[subprocess.Popen]) -> None:
    proc, child = _start_group(groups, "polite")
    watchdog = Watchdog(grace_s=2.0)
    watchdog.watch(proc.pid)
    watchdog.release()
    assert watchdog.proc.returncode == 0
    assert proc.poll() is None and sorted(group_members(proc.pid)) == sorted([proc.pid, child])
