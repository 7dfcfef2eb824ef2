"""Uploads of a chosen age and state as the API and a run leave them (input, result and rejected
rows on disk, a status record in Redis), and whether each part of one is still there: what the
retention tests purge."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from aimq_serving.uploads.messages import UploadMessage
from aimq_serving.uploads.status import UploadStatusStore
from aimq_serving.uploads.storage import UploadStorage, new_upload_id

DAY = 86_400.0
# The ages of the uploads are counted back from here, once for the whole session.
NOW = time.time()


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
    """Whether the upload has (its status record, its entry in the recent index, its folder)."""
    in_index = status.client.zscore(status.recent_key, upload_id) is not None
    return status.get(upload_id) is not None, in_index, storage.directory(upload_id).exists()
