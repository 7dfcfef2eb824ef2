"""How long the upload sensor's next tick may wait on an empty queue, learned from the daemon's rhythm.

Dagster's sensor daemon starts a loop every 5 s (``MIN_INTERVAL_LOOP_TIME``) and evaluates the sensor
in that loop only if its previous tick has finished, runs submitted included. A tick that waits for
uploads covers that part of the 5 s; an upload arriving after it returned waits for the next loop.
So the longer a tick waits, the sooner a lone upload is picked up, up to the point where the tick,
with its run submission (launching a run: ~0.3 s), is still running when the next loop starts: the
loop skips the sensor, and ticks come every 10 s (measured with a 4 s wait under a load average of
20+).

The sensor keeps in its cursor when its last tick started and how long it was allowed to wait. Ticks
5 s apart: the next may wait a little longer, up to ``sensor_wait_s``. More than ``SKIPPED_AFTER_S``
apart (a loop skipped, or the machine so busy the daemon fell behind): it waits ``BACK_OFF_S`` less,
down to ``FLOOR_S``. On a quiet machine the wait settles at ``sensor_wait_s``; on a busy one, where
everything around the wait takes longer, it settles where ticks are 5 s apart again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# A tick started more than this after the previous one: the daemon's loop (5 s) skipped the sensor.
SKIPPED_AFTER_S = 7.5
FLOOR_S = 1.0
BACK_OFF_S = 1.0
# Per tick that kept the rhythm: from the floor back to 4 s in 15 ticks (75 s).
RECOVER_S = 0.2


@dataclass(frozen=True)
class TickPacing:
    wait_s: float
    started: float  # this tick's start (wall clock, time.time())

    @classmethod
    def next(cls, cursor: str | None, ceiling_s: float, now: float) -> TickPacing:
        """The pacing of the tick starting ``now``, after the one ``cursor`` recorded (if any)."""
        previous = cls.parse(cursor)
        if previous is None:
            return cls(ceiling_s, now)
        if now - previous.started > SKIPPED_AFTER_S:
            wait = previous.wait_s - BACK_OFF_S
        else:
            wait = previous.wait_s + RECOVER_S
        return cls(round(min(ceiling_s, max(min(FLOOR_S, ceiling_s), wait)), 3), now)

    @classmethod
    def parse(cls, cursor: str | None) -> TickPacing | None:
        """The pacing a cursor recorded; None for no cursor or one this module did not write."""
        try:
            data = json.loads(cursor or "")
            return cls(float(data["wait_s"]), float(data["started"]))
        except (ValueError, KeyError, TypeError):
            return None

    def cursor(self) -> str:
        return json.dumps({"wait_s": self.wait_s, "started": self.started})
