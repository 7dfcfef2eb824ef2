"""Monitoring end to end on the session's platform (API, dagster-daemon launching real run processes):
an upload scored by a real run is a scored_uploads partition with its checks, and the daemon's
drift_history_refresh sensor refreshes the group's drift_history with it."""

from __future__ import annotations

import time

import dagster as dg
import httpx
import pytest

from aimq_pipelines.models.synthetic import generate_listings
from aimq_pipelines.monitoring.history import HISTORY_JOB, history_key
from aimq_pipelines.monitoring.scored_uploads import SCORED_UPLOADS, UPLOAD_PARTITIONS
from aimq_serving import schema
from tests.helpers.platform import Platform, wait_for_upload

pytestmark = pytest.mark.slow


def _wait(what: str, found, timeout_s: float = 120.0, platform: Platform | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if platform is not None:
            platform.check_alive()
        value = found()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} not seen within {timeout_s:.0f} s")


def test_a_drifting_upload_shows_in_dagster_and_in_drift_history(
    platform: Platform, instance: dg.DagsterInstance
) -> None:
    frame = generate_listings("A", 400, seed=43)
    frame["kilometers"] = 1_900_000  # within the schema, far beyond the training data
    content = frame[list(schema.INPUT_COLUMNS)].to_csv(index=False).encode()
    response = httpx.post(f"{platform.api_url}/upload", files={"file": ("drifting.csv", content)}, timeout=30)
    assert response.status_code == 202, response.text
    upload_id = response.json()["upload_id"]
    record = wait_for_upload(platform.api_url, upload_id, platform=platform)
    assert record["state"] == "succeeded" and record["drift"]["verdict"] == "drift", record

    # The run reports the upload's partition, its materialization and then its checks once the status
    # is recorded (aimq_pipelines/uploads/jobs.py): they follow the status by a few writes.
    _wait("its scored_uploads partition", lambda: upload_id in instance.get_dynamic_partitions(UPLOAD_PARTITIONS.name))

    def drift_checked() -> list:
        history = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(SCORED_UPLOADS, "input_drift"), limit=20
        )
        return [r for r in history if r.partition == upload_id]

    (mine,) = _wait("its input_drift check", drift_checked)
    (materialization,) = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SCORED_UPLOADS, asset_partitions=[upload_id]), limit=5
    ).records
    assert materialization.run_id == record["run_id"]
    meta = materialization.asset_materialization.metadata
    assert meta["group_verdicts"].value == {"A": "drift"} and meta["dagster/row_count"].value == 400
    evaluation = mine.event.dagster_event.event_specific_data
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN

    # The daemon's sensor asks for a refresh of group A's drift_history (the first one at once; later
    # ones at most every AIMQ_DRIFT_HISTORY_REFRESH_S), and that run lists this upload.
    def refreshed() -> dg.EventLogRecord | None:
        records = instance.fetch_materializations(history_key("A"), limit=1).records
        if records and records[0].timestamp > materialization.timestamp:
            return records[0]
        return None

    history = _wait("A/drift_history refreshed after the upload", refreshed, platform=platform)
    run = instance.get_run_by_id(history.run_id)
    assert run.job_name == HISTORY_JOB and run.tags["dagster/sensor_name"] == "drift_history_refresh"
    table = history.asset_materialization.metadata["recent_uploads"].value
    assert upload_id in [row.data["upload_id"] for row in table.records]
