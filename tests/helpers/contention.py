"""A contended CPU for the reliability tests: one CPU-bound process pinned to each core.

Production machines are busy; the fault guarantees (each upload scored once, nothing lost, `aimq
up` stops everything) must hold when every core is shared. The hogs run at normal priority, each
pinned (``os.sched_setaffinity``, what ``taskset`` does) to one core, for as long as the context
lasts, and are always killed when it ends, whatever the test did.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# Spins until killed; a busy loop, not sleeps, so the scheduler shares every core with it.
_SPIN = "while True: pass"


@contextmanager
def busy_cpus() -> Iterator[list[int]]:
    """One pinned busy-loop process per core this process may use; yields their pids."""
    hogs: list[subprocess.Popen] = []
    try:
        for core in sorted(os.sched_getaffinity(0)):
            hogs.append(
                subprocess.Popen(
                    [sys.executable, "-c", _SPIN],
                    preexec_fn=lambda core=core: os.sched_setaffinity(0, {core}),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        yield [h.pid for h in hogs]
    finally:
        for hog in hogs:
            if hog.poll() is None:
                hog.send_signal(signal.SIGKILL)
            hog.wait()
