"""A scoring run's process killed (SIGKILL) in the middle of a file: Dagster's run retries rerun it,
the upload ends scored once, and no half-written result is ever served."""

from __future__ import annotations

import os
import signal

import dagster as dg
import httpx
import pytest

from tests.faults.conftest import FaultPlatform
from tests.faults.support import (
    PARENT_RUN_TAG, assert_scored_once, process_group, run_pid, runs_of, upload_and_catch_mid_file,
)

pytestmark = pytest.mark.slow

# Read in blocks of ~1 MB (~12,000 rows): a dozen progress reports, a few seconds of scoring.
ROWS = 150_000


def test_run_worker_killed_mid_file_is_retried_and_scores_once(fault_platform: FaultPlatform) -> None:
    fp = fault_platform
    upload_id, _, first_run_id = upload_and_catch_mid_file(fp, "big.csv", ROWS)
    pid = run_pid(fp, first_run_id)
    assert pid is not None, "no 'Started process for run' event"
    # The run worker is one of the platform's processes, not anything else on the machine.
    assert process_group(pid) == fp.platform.services["dagster-daemon"].proc.pid
    os.kill(pid, signal.SIGKILL)

    # Nothing of the killed run is served: the result is not in place and the API says so.
    upload_dir = fp.upload_dir / upload_id[:2] / upload_id
    assert not (upload_dir / "result.csv").exists()
    assert list((upload_dir / "work").glob(".result.csv.*.tmp")), "the killed run was writing elsewhere"
    refused = httpx.get(f"{fp.api_url}/uploads/{upload_id}/result", timeout=10)
    assert refused.status_code == 409, refused.text

    record = assert_scored_once(fp, upload_id, ROWS)
    runs = {r.run_id: r for r in runs_of(fp, upload_id)}
    killed, retry = runs[first_run_id], runs[record["run_id"]]
    assert killed.status == dg.DagsterRunStatus.FAILURE
    assert retry.tags[PARENT_RUN_TAG] == killed.run_id  # a run retry, not a second request
    assert record["rows_rejected"] == 0 and record["error"] is None
