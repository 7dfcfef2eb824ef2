"""The purge_uploads job takes the purged uploads' scored_uploads partitions and check results with them,
and old drift_history refresh runs (a Dagster instance of this module's own, the real Redis)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import redis

from aimq_pipelines.definitions import defs
from aimq_pipelines.monitoring.history import HISTORY_JOB
from aimq_pipelines.monitoring.retention import purge_monitoring
from aimq_pipelines.monitoring.scored_uploads import (
    SCORED_UPLOADS,
    UPLOAD_PARTITIONS,
    evaluate_drift,
    evaluate_schema,
    materialization,
)
from aimq_pipelines.uploads.purge import purge_uploads_job
from aimq_pipelines.uploads.resources import UploadsResource
from aimq_serving.settings import AimqSettings
from aimq_serving.uploads.status import UploadStatusStore
from aimq_serving.uploads.storage import UploadStorage
from tests.helpers.drift_reports import group_report, report
from tests.helpers.redis_keys import clear_prefix
from tests.helpers.upload_records import DAY, upload


@pytest.fixture
def fresh_instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def prefix(settings: AimqSettings, redis_client: redis.Redis) -> Iterator[str]:
    own = f"{settings.redis_prefix}-monpurge-{uuid.uuid4().hex[:6]}"
    yield own
    clear_prefix(redis_client, own)


def scored(instance: dg.DagsterInstance, upload_id: str) -> None:
    """What a scoring step records for an upload (scored_uploads.report, without a run)."""
    instance.add_dynamic_partitions(UPLOAD_PARTITIONS.name, [upload_id])
    drift = report(A=group_report("drift", drifted=("kilometers",)))
    instance.report_runless_asset_event(
        materialization(
            upload_id, original_name="f.csv", rows_total=3, rows_rejected=0, model_versions={"A": 1}, drift=drift
        )
    )
    instance.report_runless_asset_event(evaluate_schema(upload_id, None))
    instance.report_runless_asset_event(evaluate_drift(upload_id, drift))


def check_results(instance: dg.DagsterInstance) -> set[str]:
    partitions = set()
    for name in ("input_drift", "input_schema"):
        history = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(SCORED_UPLOADS, name), limit=100
        )
        partitions |= {r.partition for r in history}
    return partitions


def test_purged_uploads_lose_their_partition_and_check_results(
    fresh_instance: dg.DagsterInstance, settings: AimqSettings, prefix: str, tmp_path: Path
) -> None:
    status = UploadStatusStore(settings.redis_client(), prefix)
    storage = UploadStorage(tmp_path)
    expired = upload(status, storage, created_days_ago=10, finished_days_ago=9)
    kept = upload(status, storage, created_days_ago=3, finished_days_ago=3)
    for upload_id in (expired, kept):
        scored(fresh_instance, upload_id)
    assert check_results(fresh_instance) == {expired, kept}

    resource = UploadsResource(upload_dir=str(tmp_path), redis_prefix=prefix, upload_retention_days=7)
    result = purge_uploads_job.execute_in_process(instance=fresh_instance, resources={"uploads": resource})
    assert result.success
    assert fresh_instance.get_dynamic_partitions(UPLOAD_PARTITIONS.name) == [kept]
    assert check_results(fresh_instance) == {kept}
    output = next(
        e
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.STEP_OUTPUT and e.step_key == "purge_dagster_runs"
    )
    metadata = output.event_specific_data.metadata
    assert metadata["scored_upload_partitions_deleted"].value == 1
    assert metadata["check_results_deleted"].value == 2


def test_drift_history_refresh_runs_older_than_the_retention_are_deleted(
    fresh_instance: dg.DagsterInstance, settings: AimqSettings, prefix: str
) -> None:
    run = defs.resolve_job_def(HISTORY_JOB).execute_in_process(instance=fresh_instance)
    assert run.success
    status = UploadStatusStore(settings.redis_client(), prefix)
    kept = purge_monitoring(fresh_instance, status, older_than_s=DAY)
    assert kept.history_runs_deleted == 0 and fresh_instance.get_run_by_id(run.run_id) is not None
    later = purge_monitoring(fresh_instance, status, older_than_s=DAY, now=time.time() + 2 * DAY)
    assert later.history_runs_deleted == 1 and fresh_instance.get_run_by_id(run.run_id) is None
