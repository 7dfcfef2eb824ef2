"""A scoring run's process killed (SIGKILL) in the middle of a file: Dagster's run retries rerun it,
the upload stays `running` until the retry has scored it (never `failed` on the way), ends scored
once, and no half-written result is ever served; on a quiet and on a contended machine."""

from __future__ import annotations

import json
import os
import signal
import time

import dagster as dg
import httpx
import pytest
from dagster._core.utils import make_new_run_id

from aimq_pipelines.dagster_internals import GRPC_INFO_TAG, code_server_run_health
from aimq_pipelines.uploads.run_failures import WILL_RETRY_TAG
from tests.helpers.faults import (
    PARENT_RUN_TAG,
    FaultPlatform,
    assert_scored_once,
    cmdline,
    parent_pid,
    process_group,
    retry_wait_s,
    run_pid,
    runs_of,
    status_store,
    upload_and_catch_mid_file,
)
from tests.helpers.ports import free_port

pytestmark = pytest.mark.slow

# Read in blocks of ~1 MB (~12,000 rows): a dozen progress reports, a few seconds of scoring.
ROWS = 150_000


def states_until_finished(fp: FaultPlatform, upload_id: str, timeout_s: float) -> list[str]:
    """Every state the upload's record shows (polled often) until it is succeeded or failed."""
    status, seen = status_store(fp), []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = status.get(upload_id)
        if record is not None and (not seen or seen[-1] != record.state):
            seen.append(record.state)
        if seen and seen[-1] in ("succeeded", "failed"):
            return seen
        fp.platform.check_alive()
        time.sleep(0.1)
    raise AssertionError(f"upload {upload_id} not finished within {timeout_s:.0f} s; states {seen}")


def test_run_worker_killed_mid_file_is_retried_and_scores_once(fault_platform: FaultPlatform, cpu: bool) -> None:
    fp = fault_platform
    upload_id, _, first_run_id = upload_and_catch_mid_file(fp, "big.csv", ROWS)
    pid = run_pid(fp, first_run_id)
    assert pid is not None, "no 'Started process for run' event"
    # The run worker is one of the platform's processes, not anything else on the machine, and was
    # forked from the code server's warm forkserver, not spawned (aimq_pipelines.code_server).
    code_server = fp.platform.services["code-server"].proc.pid
    assert process_group(pid) == code_server
    forkserver = parent_pid(pid)
    assert "multiprocessing.forkserver" in cmdline(forkserver) and parent_pid(forkserver) == code_server
    # Run monitoring's check of a run in a code server (compose and k8s start small scoring runs
    # there, aimq_pipelines/run_launcher.py): running while the server has its process; failed for a
    # run that server does not have (restarted); running, for now, while no server answers.
    running = fp.instance.get_run_by_id(first_run_id)
    assert code_server_run_health(running).status.value == "RUNNING"
    lost = dg.DagsterRun(job_name=running.job_name, run_id=make_new_run_id(), tags=running.tags)
    assert code_server_run_health(lost).status.value == "FAILED"
    unreachable = {**running.tags, GRPC_INFO_TAG.load(): json.dumps({"host": "127.0.0.1", "port": free_port()})}
    silent = dg.DagsterRun(job_name=running.job_name, run_id=running.run_id, tags=unreachable)
    assert code_server_run_health(silent).status.value == "RUNNING"
    os.kill(pid, signal.SIGKILL)

    # Nothing of the killed run is served: the result is not in place and the API says so.
    upload_dir = fp.upload_dir / upload_id[:2] / upload_id
    assert not (upload_dir / "result.csv").exists()
    assert list((upload_dir / "work").glob(".result.csv.*.tmp")), "the killed run was writing elsewhere"
    refused = httpx.get(f"{fp.api_url}/uploads/{upload_id}/result", timeout=10)
    assert refused.status_code == 409, refused.text

    # A retry follows, so the upload is never shown failed on the way (issue 17).
    assert states_until_finished(fp, upload_id, retry_wait_s(fp)) == ["running", "succeeded"]
    record = assert_scored_once(fp, upload_id, ROWS)
    runs = {r.run_id: r for r in runs_of(fp, upload_id)}
    killed, retry = runs[first_run_id], runs[record["run_id"]]
    assert killed.status == dg.DagsterRunStatus.FAILURE
    assert killed.tags[WILL_RETRY_TAG] == "true"
    assert retry.tags[PARENT_RUN_TAG] == killed.run_id  # a run retry, not a second request
    assert record["rows_rejected"] == 0 and record["error"] is None
