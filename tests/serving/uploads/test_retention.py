"""Retention: finished uploads older than the period lose their files, then their record; nothing
else is touched. Real Redis under a prefix of the test's own, real files in a temp folder."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from aimq_serving.settings import AimqSettings
from aimq_serving.uploads.retention import purge_finished
from aimq_serving.uploads.status import UploadStatusStore
from aimq_serving.uploads.storage import UploadStorage, new_upload_id
from tests.helpers.redis_keys import clear_prefix
from tests.helpers.upload_records import DAY, NOW, exists, upload


@pytest.fixture
def status(settings: AimqSettings, redis_client: redis.Redis) -> Iterator[UploadStatusStore]:
    prefix = f"{settings.redis_prefix}-retention-{uuid.uuid4().hex[:6]}"
    yield UploadStatusStore(settings.redis_client(), prefix)
    clear_prefix(redis_client, prefix)


@pytest.fixture
def storage(tmp_path: Path) -> UploadStorage:
    return UploadStorage(tmp_path / "uploads")


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
