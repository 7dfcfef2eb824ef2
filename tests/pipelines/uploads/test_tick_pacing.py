"""TickPacing: how long the upload sensor's next tick may wait, from when the previous one started."""

from __future__ import annotations

import pytest

from aimq_pipelines.uploads.tick_pacing import BACK_OFF_S, FLOOR_S, RECOVER_S, SKIPPED_AFTER_S, TickPacing

CEILING = 4.0


def after(previous: TickPacing | None, seconds_later: float) -> TickPacing:
    now = (previous.started if previous else 1000.0) + seconds_later
    return TickPacing.next(previous.cursor() if previous else None, CEILING, now)


def test_the_first_tick_waits_the_ceiling() -> None:
    assert after(None, 0).wait_s == CEILING


def test_ticks_in_the_daemons_rhythm_keep_the_ceiling() -> None:
    pacing = after(None, 0)
    for _ in range(5):
        pacing = after(pacing, 5.05)
    assert pacing.wait_s == CEILING


def test_a_skipped_loop_shortens_the_wait_and_the_rhythm_brings_it_back() -> None:
    skipped = after(after(None, 0), 10.0)
    assert skipped.wait_s == CEILING - BACK_OFF_S
    again = after(skipped, 10.0)
    assert again.wait_s == CEILING - 2 * BACK_OFF_S
    recovered = again
    for _ in range(round(2 * BACK_OFF_S / RECOVER_S)):
        recovered = after(recovered, 5.0)
    assert recovered.wait_s == pytest.approx(CEILING)


def test_the_wait_never_falls_below_the_floor() -> None:
    pacing = after(None, 0)
    for _ in range(10):
        pacing = after(pacing, SKIPPED_AFTER_S + 1)
    assert pacing.wait_s == FLOOR_S


def test_a_zero_ceiling_means_no_wait_at_all() -> None:
    assert TickPacing.next(TickPacing(2.0, 0.0).cursor(), 0.0, 100.0).wait_s == 0.0


@pytest.mark.parametrize("cursor", [None, "", "not json", "{}", '{"wait_s": "x", "started": 1}', "[1, 2]"])
def test_a_cursor_it_did_not_write_starts_afresh(cursor: str | None) -> None:
    assert TickPacing.parse(cursor) is None
    assert TickPacing.next(cursor, CEILING, 5.0) == TickPacing(CEILING, 5.0)
