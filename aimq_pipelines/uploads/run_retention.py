"""Dagster's own storage follows the uploads' retention: the runs (with their event logs) of purged
uploads are deleted, and training runs keep the last few per model group.

Why: a deployment that scores 10,000 small files a day makes 10,000 runs a day, each with its event
log; the uploads are purged after AIMQ_UPLOAD_RETENTION_DAYS, but Dagster keeps their runs forever
(its own `retention:` setting covers only sensor and schedule ticks), so its database (SQLite locally,
PostgreSQL in compose and k8s) and the UI's run list grow without end.

Contract:
- A scoring run is deleted once it finished more than the retention period ago and *every* upload it
  worked on is gone from the status store (purged, or never recorded); a backlog run with one upload
  still kept is kept. A run that names no upload (it cannot be told whose it is) is never deleted.
- A ``train_models`` run is kept while it is among the newest ``training_runs_kept`` runs of any model
  group it trained (a run without an asset selection trained all groups); older finished ones are
  deleted. The latest materialization of every model asset therefore stays.
- A ``purge_uploads`` run (one a day by default, one a minute in the soak benchmark) records what it
  deleted; it is kept as long as the uploads are, and deleted like a scoring run once it finished more
  than the retention period ago. Without this the purge's own runs were the one kind that still grew
  without end (found by ``benchmarks/soak_benchmark.py``). Kept forever when the retention is 0.
- The upload sensors' and the run-failure sensor's ticks (every upload sensor makes ~17,000 a day)
  that were skipped or succeeded are deleted once older than the retention period: a tick that
  started an upload's run goes with the upload. dagster.yaml's ``retention:`` counts in whole days
  (30 for successful ticks), so with a shorter upload retention the ticks outlived the uploads and
  grew the instance's schedule storage (found by the soak benchmark: +3.4 MB per 20 min there).
  Failed and started ticks are left to ``retention:``: they may still have runs to submit.
- Runs in progress are never touched. ``DagsterInstance.delete_run`` removes a run and its event log's
  rows; ``dagster_internals.delete_run_files`` what it leaves on disk (the local instance's per-run
  event-log file, the run's compute logs and step outputs), which grew by ~190 KB a run for ever.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import dagster as dg

from aimq_pipelines import dagster_internals
from aimq_pipelines.models.jobs import groups_trained, train_models_job
from aimq_pipelines.uploads.jobs import SCORING_JOBS, uploads_of
from aimq_pipelines.uploads.run_failures import RUN_FAILURE_SENSOR
from aimq_pipelines.uploads.sensors import is_upload_sensor
from aimq_serving import schema
from aimq_serving.uploads.status import UploadStatusStore

PURGE_JOB_NAME = "purge_uploads"  # the job defined in purge.py, which imports this module
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
PAGE = 200


@dataclass
class RunPurgeReport:
    scoring_runs_deleted: int = 0
    # Older than the cutoff, but one of their uploads is still kept (queued, running or recent).
    scoring_runs_kept: int = 0
    training_runs_deleted: int = 0
    purge_runs_deleted: int = 0


def _finished_runs(instance: dg.DagsterInstance, job_name: str, before: float | None = None) -> Iterator[dg.DagsterRun]:
    """Finished runs of a job, newest first, page by page. Nothing may be deleted while this runs:
    the next page starts after the previous page's last run, found by its id."""
    cursor = None
    updated_before = None if before is None else datetime.datetime.fromtimestamp(before, tz=datetime.UTC)
    while True:
        page = instance.get_runs(
            filters=dg.RunsFilter(job_name=job_name, statuses=FINISHED, updated_before=updated_before),
            cursor=cursor,
            limit=PAGE,
        )
        yield from page
        if len(page) < PAGE:
            return
        cursor = page[-1].run_id


def _delete(instance: dg.DagsterInstance, run_ids: list[str], on_progress: Callable[[int], None] | None) -> None:
    for done, run_id in enumerate(run_ids, start=1):
        instance.delete_run(run_id)
        dagster_internals.delete_run_files(instance, run_id)
        if on_progress is not None and done % PAGE == 0:
            on_progress(done)


def purge_scoring_runs(
    instance: dg.DagsterInstance,
    status: UploadStatusStore,
    *,
    older_than_s: float,
    now: float | None = None,
    report: RunPurgeReport | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> RunPurgeReport:
    """Delete the finished scoring runs older than ``older_than_s`` whose uploads are all purged."""
    report = report or RunPurgeReport()
    cutoff = (time.time() if now is None else now) - older_than_s
    doomed: list[str] = []  # ids only: a purge of a long-neglected instance may find very many
    for job in SCORING_JOBS:
        for run in _finished_runs(instance, job.name, before=cutoff):
            uploads = uploads_of(run)
            if uploads and all(status.get(upload_id) is None for upload_id in uploads):
                doomed.append(run.run_id)
            else:
                report.scoring_runs_kept += 1
    _delete(instance, doomed, on_progress)
    report.scoring_runs_deleted += len(doomed)
    return report


def purge_old_runs(
    instance: dg.DagsterInstance, job_name: str, *, older_than_s: float, now: float | None = None
) -> int:
    """Delete the finished runs of ``job_name`` older than ``older_than_s``; how many."""
    cutoff = (time.time() if now is None else now) - older_than_s
    doomed = [run.run_id for run in _finished_runs(instance, job_name, before=cutoff)]
    _delete(instance, doomed, None)
    return len(doomed)


def purge_purge_runs(
    instance: dg.DagsterInstance, *, older_than_s: float, now: float | None = None, report: RunPurgeReport | None = None
) -> RunPurgeReport:
    """Delete the finished ``purge_uploads`` runs older than ``older_than_s``."""
    report = report or RunPurgeReport()
    report.purge_runs_deleted += purge_old_runs(instance, PURGE_JOB_NAME, older_than_s=older_than_s, now=now)
    return report


def purge_upload_sensor_ticks(
    instance: dg.DagsterInstance, *, older_than_s: float, now: float | None = None
) -> list[str]:
    """Delete the skipped and successful ticks of the upload sensors and the run-failure sensor older
    than ``older_than_s``; returns the sensors' names."""
    before = (time.time() if now is None else now) - older_than_s
    return dagster_internals.purge_sensor_ticks(
        instance, lambda name: is_upload_sensor(name) or name == RUN_FAILURE_SENSOR, before
    )


def purge_training_runs(
    instance: dg.DagsterInstance, *, keep_per_group: int, report: RunPurgeReport | None = None
) -> RunPurgeReport:
    """Delete the finished ``train_models`` runs that are not among the newest ``keep_per_group`` of
    any group they trained."""
    report = report or RunPurgeReport()
    seen = dict.fromkeys(schema.MODEL_GROUPS, 0)
    doomed: list[str] = []
    for run in _finished_runs(instance, train_models_job.name):
        groups = groups_trained(run)
        kept = any(seen[group] < keep_per_group for group in groups)
        for group in groups:
            seen[group] += 1
        if not kept:
            doomed.append(run.run_id)
    _delete(instance, doomed, None)
    report.training_runs_deleted += len(doomed)
    return report
