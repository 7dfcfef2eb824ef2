"""Retention: finished uploads older than the period lose their files, then their record; nothing
else is touched. Real Redis under a prefix of the test's own, real files in a temp folder."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from aimq_serving.settings import AimqSettings
from aimq_serving.uploads.messages import UploadMessage
from aimq_serving.uploads.retention import purge_finished
from aimq_serving.uploads.status import UploadStatusStore
from aimq_serving.uploads.storage import UploadStorage, new_upload_id
from tests.helpers.serving import clear_prefix

DAY = 86_400.0
NOW = time.time()


@pytest.fixture
def status(settings: AimqSettings, redis_client: redis.Redis) -> Iterator[UploadStatusStore]:
    prefix = f"{settings.redis_prefix}-retention-{uuid.uuid4().hex[:6]}"
    yield UploadStatusStore(settings.redis_client(), prefix)
    clear_prefix(redis_client, prefix)


@pytest.fixture
def storage(tmp_path: Path) -> UploadStorage:
    return UploadStorage(tmp_path / "uploads")


def upload(
    status: UploadStatusStore,
    storage: UploadStorage,
    *,
    created_days_ago: float,
    finished_days_ago: float | None,
    state: str = "succeeded",
) -> str:
    """An upload with its files on disk and its record, as the API and a run leave them."""
    upload_id = new_upload_id()
    created = NOW - created_days_ago * DAY
    message = UploadMessage(
        upload_id=upload_id,
        format="csv",
        sha256="a" * 64,
        size=4,
        original_name="listings.csv",
        created_at=datetime.fromtimestamp(created, UTC),
    )
    storage.input_path(upload_id, "csv").parent.mkdir(parents=True)
    storage.input_path(upload_id, "csv").write_bytes(b"a,b\n")
    status.register(message)
    if state != "queued":
        status.start(message, "run-1")
    if state == "succeeded":
        storage.result_path(upload_id, "csv").write_bytes(b"a,b,price\n")
        storage.rejected_path(upload_id).write_bytes(b"row,reason\n")
        status.succeed(upload_id, rows_total=0, rows_rejected=0, model_versions={}, stats={})
    elif state == "failed":
        status.fail(upload_id, "bad file")
    if finished_days_ago is not None:
        status.client.hset(status.key(upload_id), "finished_at", repr(NOW - finished_days_ago * DAY))
    return upload_id


def exists(status: UploadStatusStore, storage: UploadStorage, upload_id: str) -> tuple[bool, bool, bool]:
    in_index = status.client.zscore(status.recent_key, upload_id) is not None
    return status.get(upload_id) is not None, in_index, storage.directory(upload_id).exists()


def test_only_uploads_finished_before_the_period_go(status: UploadStatusStore, storage: UploadStorage) -> None:
    old_scored = upload(status, storage, created_days_ago=40, finished_days_ago=39)
    old_failed = upload(status, storage, created_days_ago=35, finished_days_ago=35, state="failed")
    finished_lately = upload(status, storage, created_days_ago=40, finished_days_ago=2)  # a rerun last week
    old_queued = upload(status, storage, created_days_ago=60, finished_days_ago=None, state="queued")
    old_running = upload(status, storage, created_days_ago=45, finished_days_ago=None, state="running")
    recent = upload(status, storage, created_days_ago=1, finished_days_ago=1)

    report = purge_finished(status, storage, older_than_s=30 * DAY, now=NOW, batch=2)

    assert sorted(report.deleted) == sorted([old_scored, old_failed])
    assert report.bytes_freed == 4 + 10 + 11 + 4  # input, result and rejected rows, failed input
    assert report.unfinished == 2 and report.finished_recently == 1
    for gone in (old_scored, old_failed):
        assert exists(status, storage, gone) == (False, False, False)
    for kept in (finished_lately, old_queued, old_running, recent):
        assert exists(status, storage, kept) == (True, True, True)
    # Nothing more to do the second time.
    assert purge_finished(status, storage, older_than_s=30 * DAY, now=NOW).deleted == []


def test_a_purge_stopped_halfway_is_finished_by_the_next(status: UploadStatusStore, storage: UploadStorage) -> None:
    # Files already gone (the previous purge stopped before the record), and an index entry whose
    # record vanished: both are cleaned up, and the API meanwhile says "no longer stored".
    half_done = upload(status, storage, created_days_ago=40, finished_days_ago=40)
    storage.delete(half_done)
    orphan = new_upload_id()
    status.client.zadd(status.recent_key, {orphan: NOW - 50 * DAY})

    report = purge_finished(status, storage, older_than_s=30 * DAY, now=NOW)

    assert report.deleted == [half_done] and report.bytes_freed == 0
    assert exists(status, storage, half_done) == (False, False, False)
    assert status.client.zscore(status.recent_key, orphan) is None
