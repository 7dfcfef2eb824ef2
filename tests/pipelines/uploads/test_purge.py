"""The purge_uploads job and its schedule, in process against the real Redis and Dagster instance."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import redis

from aimq_pipelines.definitions import defs
from aimq_pipelines.uploads.purge import purge_uploads_job
from aimq_pipelines.uploads.resources import UploadsResource
from aimq_serving.settings import AimqSettings
from aimq_serving.uploads.status import UploadStatusStore
from aimq_serving.uploads.storage import UploadStorage
from tests.helpers.redis_keys import clear_prefix
from tests.helpers.upload_records import exists, upload


@pytest.fixture
def prefix(settings: AimqSettings, redis_client: redis.Redis) -> Iterator[str]:
    own = f"{settings.redis_prefix}-purge-{uuid.uuid4().hex[:6]}"
    yield own
    clear_prefix(redis_client, own)


def _purge(instance: dg.DagsterInstance, upload_dir: Path, prefix: str, days: float) -> dg.ExecuteInProcessResult:
    resource = UploadsResource(upload_dir=str(upload_dir), redis_prefix=prefix, upload_retention_days=days)
    return purge_uploads_job.execute_in_process(instance=instance, resources={"uploads": resource})


def test_the_job_deletes_expired_uploads_and_reports_it(
    instance: dg.DagsterInstance, settings: AimqSettings, prefix: str, tmp_path: Path
) -> None:
    status = UploadStatusStore(settings.redis_client(), prefix)
    storage = UploadStorage(tmp_path)
    expired = upload(status, storage, created_days_ago=10, finished_days_ago=9)
    kept = upload(status, storage, created_days_ago=3, finished_days_ago=3)

    # 0 days keeps everything.
    forever = _purge(instance, tmp_path, prefix, 0)
    assert forever.success and forever.output_for_node("purge_finished_uploads") == 0
    assert exists(status, storage, expired) == (True, True, True)

    result = _purge(instance, tmp_path, prefix, 7)
    assert result.success and result.output_for_node("purge_finished_uploads") == 1
    assert exists(status, storage, expired) == (False, False, False)
    assert exists(status, storage, kept) == (True, True, True)
    output = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT)
    metadata = output.event_specific_data.metadata
    assert metadata["deleted"].value == 1 and metadata["retention_days"].value == 7.0


def test_the_purge_schedule_runs_the_job_daily() -> None:
    schedule = defs.resolve_schedule_def("purge_uploads")
    assert schedule.job_name == "purge_uploads"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.cron_schedule == AimqSettings().upload_retention_cron
    request = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=None)).run_requests[0]
    assert request.job_name in (None, "purge_uploads")
