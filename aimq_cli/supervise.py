"""How `aimq up` keeps its services from outliving it, whatever stops it.

Each service (webserver, daemon, API) runs in a session (process group) of its own, so that a stop
reaches the processes it starts in turn (code servers, run workers) and a Ctrl-C in the terminal
reaches only `aimq up`, which then stops them in order. The price: nothing stops them if `aimq up`
dies without doing so (SIGKILL, a crash, the OOM killer). Two guards cover that:

- the kernel: each service is started with ``PR_SET_PDEATHSIG`` = SIGTERM (Linux ``prctl``), so
  it is told to stop the moment `aimq up` is gone;
- a watchdog process (``python -m aimq_cli.supervise``), in a session of its own, that `aimq
  up` tells each service's process group over a pipe. When the pipe closes without `aimq up`
  releasing it first (it can only close early if `aimq up` died), the watchdog stops those groups
  like `aimq up` would have: this also reaches the services' own children, which the death signal
  does not.

The stop itself (``stop_groups``): SIGTERM to every group, up to ``STOP_GRACE_S`` for them to exit,
then SIGKILL to what is left. Written here rather than taken from a library: the standard library
has no parent-death signal and no process-group supervisor, and the supervisor packages (e.g.
supervisord, circus) are daemons of their own to configure, not something a CLI embeds.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

# A service gets this long after SIGTERM before it is killed. dagster-daemon stops its code server
# and its daemons' threads, the webserver and uvicorn finish requests: a few seconds on a quiet
# machine; the rest is room for a busy one. `aimq up` therefore exits within this bound (plus
# KILL_WAIT_S at worst) of Ctrl-C or SIGTERM, and the watchdog stops everything within the same
# bound after `aimq up` died.
STOP_GRACE_S = 15.0
# After SIGKILL the kernel needs no cooperation; this only bounds the wait for it to finish.
KILL_WAIT_S = 5.0
_POLL_S = 0.1

_PR_SET_PDEATHSIG = 1
# Loaded before any fork: the child only calls it (no dynamic loading between fork and exec).
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None

RELEASE = b"release\n"


def hear_sigterm() -> None:
    """Unblock SIGTERM and give it its default action in this process (a ``preexec_fn``'s work)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGTERM when ``parent_pid`` ends (Linux; elsewhere the
    watchdog alone covers it)."""

    def preexec() -> None:
        # The child must hear SIGTERM, whatever its parent's state: a signal mask and an ignored
        # disposition pass through fork and exec, and a full CI run once had SIGTERM blocked in the
        # test process, so that children outlived their parent and ignored the stop.
        hear_sigterm()
        if _libc is None:
            return
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before the prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: any process, zombies included
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def resident_mb(pid: int) -> float:
    """The resident memory of process ``pid`` in MB (its own, not its children's); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def _signal_groups(pgids: Iterable[int], sig: signal.Signals) -> None:
    for pgid in pgids:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass


def _wait_empty(pgids: list[int], timeout_s: float, reap: Callable[[], None]) -> list[int]:
    """The groups still with a live member after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        reap()
        alive = [g for g in pgids if group_members(g)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(_POLL_S)


def stop_groups(
    pgids: Iterable[int], grace_s: float = STOP_GRACE_S, reap: Callable[[], None] = lambda: None
) -> list[int]:
    """SIGTERM each process group, wait up to ``grace_s`` for all of them to be empty, SIGKILL the
    rest. ``reap`` collects exited children of the caller (a zombie leader is dead, not stopping).
    Returns the groups that had to be killed."""
    groups = list(pgids)
    _signal_groups(groups, signal.SIGTERM)
    stubborn = _wait_empty(groups, grace_s, reap)
    if stubborn:
        _signal_groups(stubborn, signal.SIGKILL)
        _wait_empty(stubborn, KILL_WAIT_S, reap)
    return stubborn


class Watchdog:
    """`aimq up`'s side of the watchdog process."""

    def __init__(self, grace_s: float = STOP_GRACE_S):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aimq_cli.supervise", str(grace_s)],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )

    def watch(self, pgid: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{pgid}\n".encode())
        self.proc.stdin.flush()

    def forget(self, pgid: int) -> None:
        """``pgid`` is stopped (a restarted service): the watchdog no longer stops it, so a new group
        that the kernel gives the same number later is never signalled."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"-{pgid}\n".encode())
        self.proc.stdin.flush()

    def release(self) -> None:
        """Everything is stopped: the watchdog ends without touching anything."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(RELEASE)
            self.proc.stdin.close()
        except BrokenPipeError:  # the watchdog is gone already
            pass
        self.proc.wait()


def _watch(grace_s: float) -> int:
    """The watchdog process: reads process groups from stdin (``-N``: forget group N) until ``release``
    or end of file."""
    # Ctrl-C in a terminal is for `aimq up`; the watchdog waits for it to finish or die.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: list[int] = []
    for line in sys.stdin.buffer:
        if line == RELEASE:
            return 0
        pgid = int(line)
        if pgid < 0:
            groups.remove(-pgid)
        else:
            groups.append(pgid)
    # End of file without a release: `aimq up` is gone and left its services behind.
    stop_groups(groups, grace_s)
    return 0


if __name__ == "__main__":
    sys.exit(_watch(float(sys.argv[1])))
