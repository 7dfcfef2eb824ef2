"""Soak, the CI variant (issue 28): the real `aimq up` for 3 minutes under light mixed traffic, the same
code as ``python -m benchmarks.soak_benchmark`` (its 30-minute form, whose table is in
benchmarks/results/soak.md), with a retention of 30 s so that the purge deletes uploads, runs and training
runs every minute.

It asserts behaviour, not speed (the machine may be busy): nothing lost or scored twice; what Redis and
Dagster hold at the end is no more than the retention allows; the services' file descriptors and
threads at the end within a fixed margin of their count after the warm-up (a leak of one per upload
or per run exceeds it: ~40 uploads and their runs come in the 2 minutes after it). RSS and latency are
written to test-output/soak/ with the samples, not asserted: three minutes on a shared machine cannot
tell a leak from noise there; the benchmark's 30 minutes judge them.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from pathlib import Path

import pytest

from benchmarks.soak_benchmark import SERVICES, SoakConfig, judge, run_soak, upload_tally
from tests.helpers.paths import REPO
from tests.helpers.session import TEST_ROWS_PER_GROUP

OUTPUT = REPO / "test-output" / "soak"
CONFIG = SoakConfig(
    minutes=3,
    sample_s=10,
    upload_every_s=3,
    predict_per_s=2,
    retrain_cron="*/2 * * * *",
    retention_days=30 / 86_400,
    training_runs_kept=1,
    train_rows=TEST_ROWS_PER_GROUP,
    max_rows=2_000,
    drain_s=120,
)
# What a service's fds and threads may differ by at the end from after the warm-up: the connections
# and threads of a couple of runs in flight and of thread pools growing to their size under load.
FD_MARGIN, THREAD_MARGIN = 20, 10


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_soak_nothing_lost_nothing_grows(tmp_path: Path) -> None:
    result = run_soak(CONFIG, tmp_path)
    goals = judge(result)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "summary.json").write_text(
        json.dumps(
            {"goals": [asdict(g) for g in goals], "samples": [asdict(s) for s in result.samples], "end": result.end},
            indent=2,
            default=str,
        )
    )

    tally = upload_tally(result.uploads)
    wrong = [(log.kind, log.upload_id, log.verdict) for log in result.uploads if log.verdict != "ok"]
    assert not wrong, (tally, wrong)
    assert tally["accepted"] >= 30, tally  # an upload every 3 s for 3 minutes: the traffic happened

    # The purge ran, and succeeded; at the end nothing is stored that retention should have removed:
    # no status record or run of an upload overdue for deletion, no purge run older than the
    # retention, no file of a deleted run; no more training runs than kept (+ one since the purge).
    assert result.purge_runs >= 2, result.purge_runs
    end = result.end
    assert end["purge_runs_failed"] == 0, end
    assert end["overdue_uploads"] > 0, end  # the check below checked something
    assert not end["overdue_upload_records_left"] and not end["overdue_runs_left"], end
    assert not end["run_files_left"], end
    assert end["training_runs"] <= end["training_runs_allowed"], end

    # fds and threads: after the warm-up (a minute: the first runs, the first purge, a retrain's
    # threads) against the end, each the median of a few samples.
    after_warmup = [s for s in result.samples if CONFIG.duration_s / 3 <= s.t_s < CONFIG.duration_s / 3 + 30]
    at_end = [s for s in result.samples if s.t_s >= CONFIG.duration_s - 30]
    for name in SERVICES:
        for what, margin in (("fds", FD_MARGIN), ("threads", THREAD_MARGIN)):
            warm = statistics.median(s.services[name][what] for s in after_warmup)
            final = statistics.median(s.services[name][what] for s in at_end)
            assert final <= warm + margin, (name, what, warm, final)

    # Predictions answered throughout.
    assert result.predict.calls and all(status == 200 for _, _, _, status in result.predict.calls)
