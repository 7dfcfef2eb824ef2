"""What the monitoring domain keeps in Dagster's storage follows the uploads' retention (called by the
purge_uploads job, after it deleted the uploads and their runs):

- the ``scored_uploads`` partition of every upload whose status record is gone (purged), with its check
  results (the materializations went with the scoring runs, which run_retention.py deletes once all
  their uploads are purged);
- the ``refresh_drift_history`` runs older than the retention, with their drift_history
  materializations (the newest ones stay while uploads are kept: at least one refresh follows any upload).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import dagster as dg

from aimq_pipelines import dagster_internals
from aimq_pipelines.monitoring.history import HISTORY_JOB
from aimq_pipelines.monitoring.scored_uploads import SCORED_UPLOADS, UPLOAD_PARTITIONS
from aimq_pipelines.uploads.run_retention import purge_old_runs
from aimq_serving.uploads.status import UploadStatusStore

# Partitions looked up in Redis per round trip.
BATCH = 500


@dataclass
class MonitoringPurgeReport:
    partitions_deleted: int = 0
    check_results_deleted: int = 0
    history_runs_deleted: int = 0


def purged_uploads(status: UploadStatusStore, upload_ids: list[str]) -> list[str]:
    """The ids whose status record no longer exists."""
    gone = []
    for start in range(0, len(upload_ids), BATCH):
        chunk = upload_ids[start : start + BATCH]
        pipe = status.client.pipeline(transaction=False)
        for upload_id in chunk:
            pipe.exists(status.key(upload_id))
        gone += [upload_id for upload_id, exists in zip(chunk, pipe.execute()) if not exists]
    return gone


def purge_monitoring(
    instance: dg.DagsterInstance, status: UploadStatusStore, *, older_than_s: float, now: float | None = None
) -> MonitoringPurgeReport:
    report = MonitoringPurgeReport()
    gone = purged_uploads(status, list(instance.get_dynamic_partitions(UPLOAD_PARTITIONS.name)))
    report.check_results_deleted = dagster_internals.delete_check_executions(instance, SCORED_UPLOADS, gone)
    for upload_id in gone:
        instance.delete_dynamic_partition(UPLOAD_PARTITIONS.name, upload_id)
    report.partitions_deleted = len(gone)
    report.history_runs_deleted = purge_old_runs(
        instance, HISTORY_JOB, older_than_s=older_than_s, now=time.time() if now is None else now
    )
    return report
