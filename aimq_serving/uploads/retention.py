"""Retention: finished uploads are deleted some days after they finished.

An upload whose run ``succeeded`` or ``failed`` more than ``older_than_s`` ago loses its files
(input, result, rejected rows, scratch) and then its status record; ``GET /uploads/<id>`` then
answers 404. Queued and running uploads are never touched, however old. Files go first: if the purge
stops halfway, the record still exists and its downloads answer "no longer stored", and the next
purge finishes the job.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aimq_serving.uploads.status import UploadStatusStore
from aimq_serving.uploads.storage import UploadStorage

FINISHED = ("succeeded", "failed")


@dataclass
class PurgeReport:
    deleted: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    # Older than the cutoff but still queued or running: kept.
    unfinished: int = 0
    # Created before the cutoff but finished after it: kept until their own time comes.
    finished_recently: int = 0


def purge_finished(
    status: UploadStatusStore,
    storage: UploadStorage,
    *,
    older_than_s: float,
    now: float | None = None,
    batch: int = 500,
    on_progress: Callable[[PurgeReport], None] | None = None,
) -> PurgeReport:
    """Delete every upload that finished more than ``older_than_s`` seconds before ``now``."""
    cutoff = (time.time() if now is None else now) - older_than_s
    report = PurgeReport()
    while True:
        # An upload finishes after it is created, so only those created before the cutoff can
        # qualify. Oldest first; what is deleted leaves the index, so the next page starts after
        # the ones kept so far.
        kept = report.unfinished + report.finished_recently
        ids = status.created_before(cutoff, batch, offset=kept)
        if not ids:
            return report
        for upload_id in ids:
            record = status.get(upload_id)
            if record is None:  # an index entry without its record
                status.delete(upload_id)
            elif record.state not in FINISHED:
                report.unfinished += 1
            elif (record.finished_at or record.updated_at or record.created_at) >= cutoff:
                report.finished_recently += 1
            else:
                report.bytes_freed += _size(storage.directory(upload_id))
                storage.delete(upload_id)
                status.delete(upload_id)
                report.deleted.append(upload_id)
        if on_progress is not None:
            on_progress(report)


def _size(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total
