"""What each upload sensor's last tick requested, kept until its next tick: its broker connection and
the uploads it claimed.

Why: a tick requests runs for the messages it took and leaves them unacknowledged, and Dagster creates
the runs only after the tick returned (the daemon writes the requests into the tick, then submits them).
With one sensor nothing else reads the queue in between. With several (``sensor_shards``), another
sensor's open tick could take such an upload's message (put back by a closed connection, or a second
copy a publisher sent after a lost confirm), find no run yet and request a second one: Dagster
de-duplicates run keys per sensor only. So, until the same sensor's next tick starts (Dagster starts it
only after the previous tick's runs were submitted: one tick at a time per sensor):

- its connection stays open, holding its messages out of every sensor's sight; the next tick closes it
  first, the messages come back, and whoever takes them finds their runs and acknowledges them;
- its uploads stay claimed: another sensor that takes one of them (a second copy) leaves it alone.

All upload sensors are evaluated by one process, the code server, so these live in its memory. The
connection dies with the process, and the broker drops a connection that misses its heartbeats (a few
seconds, ``connection_parameters``): the messages then come back on their own. A claim lapses after
``CLAIM_TTL_S`` in case the sensor's next tick never comes (the sensor was stopped); by then the daemon
has written the requests into the tick, which ``dagster_internals.pending_sensor_requests`` reads, as it
does after a restart of the code server.

The lock also keeps two ticks of one sensor apart in this process: after a daemon restart the old
daemon's tick may still be running here when the new daemon starts the next one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pika
import pika.exceptions

log = logging.getLogger(__name__)

# Longer than a tick's return and the daemon's writing of its requests, however busy the machine
# (the daemon's sensor evaluation itself times out after 60 s).
CLAIM_TTL_S = 120.0


@dataclass
class _Held:
    connection: pika.BlockingConnection | None
    uploads: set[str]
    since: float  # when the tick that claimed them ended (kept) or started


_guard = threading.Lock()
# One upload sensor takes messages at a time: the others' ticks wait for their turn (waiting for
# uploads all the same). A burst then becomes one tick's runs (up to ``sensor_batch_size``) instead
# of a few uploads for each sensor polling at once, each split into runs of its own (a run process
# per run), and the queue is asked by one sensor at a time, not every 50 ms by each.
_taking = threading.Lock()
_locks: dict[str, threading.Lock] = {}
_held: dict[str, _Held] = {}


def _close(connection: pika.BlockingConnection | None) -> None:
    if connection is None:
        return
    try:
        if connection.is_open:
            connection.close()
    except (pika.exceptions.AMQPError, OSError):
        log.debug("closing a held broker connection failed; the broker requeues on its own", exc_info=True)


@contextmanager
def sensor_tick(sensor_name: str) -> Iterator[None]:
    """One tick of ``sensor_name`` at a time. What its previous tick held is let go first; what this
    one claims (``try_claim``) is let go at its end unless it ``keep``s it, and if it fails."""
    with _guard:
        lock = _locks.setdefault(sensor_name, threading.Lock())
    with lock:
        release(sensor_name)
        with _guard:
            _held[sensor_name] = _Held(None, set(), time.monotonic())
        kept = False
        try:
            yield
            with _guard:
                kept = _held[sensor_name].connection is not None
        finally:
            if not kept:
                release(sensor_name)


@contextmanager
def taking_turn(timeout_s: float) -> Iterator[bool]:
    """The turn to take messages, waiting for it at most ``timeout_s``; yields whether it came."""
    mine = _taking.acquire(timeout=max(0.0, timeout_s))
    try:
        yield mine
    finally:
        if mine:
            _taking.release()


def try_claim(sensor_name: str, upload_id: str) -> str | None:
    """Claim ``upload_id`` for the tick of ``sensor_name`` in progress; if another upload sensor's
    tick claimed it (and the claim has not lapsed), claim nothing and return that sensor's name."""
    now = time.monotonic()
    with _guard:
        for name, held in _held.items():
            if name != sensor_name and upload_id in held.uploads and now - held.since < CLAIM_TTL_S:
                return name
        _held[sensor_name].uploads.add(upload_id)
    return None


def keep(sensor_name: str, connection: pika.BlockingConnection) -> None:
    """Keep ``connection`` (with the messages it has not acknowledged) and this tick's claims until
    ``sensor_name``'s next tick."""
    with _guard:
        held = _held[sensor_name]
        held.connection, held.since = connection, time.monotonic()


def release(sensor_name: str) -> None:
    """Let go of what ``sensor_name``'s last tick held: its messages go back to the queue."""
    with _guard:
        held = _held.pop(sensor_name, None)
    if held is not None:
        _close(held.connection)


def release_all() -> None:
    """Let go of everything held (tests; a process that stops evaluating the sensors)."""
    with _guard:
        names = list(_held)
    for name in names:
        release(name)
