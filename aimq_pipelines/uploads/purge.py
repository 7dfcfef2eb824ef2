"""The purge_uploads job: delete finished uploads older than AIMQ_UPLOAD_RETENTION_DAYS
(``aimq_serving/uploads/retention.py``), then the Dagster runs of purged uploads and all but the last
AIMQ_TRAINING_RUNS_KEPT training runs per group (``run_retention.py``), and the purged uploads'
scored_uploads partitions with their check results (``monitoring/retention.py``); and the purge_uploads
schedule that runs it (AIMQ_UPLOAD_RETENTION_CRON)."""

import dagster as dg

from aimq_pipelines.monitoring.retention import MonitoringPurgeReport, purge_monitoring
from aimq_pipelines.uploads.jobs import RETRY_POLICY
from aimq_pipelines.uploads.resources import UploadsResource
from aimq_pipelines.uploads.run_retention import (
    PURGE_JOB_NAME,
    RunPurgeReport,
    purge_purge_runs,
    purge_scoring_runs,
    purge_training_runs,
    purge_upload_sensor_ticks,
)
from aimq_serving.settings import get_settings
from aimq_serving.uploads.retention import PurgeReport, purge_finished

_DAY_S = 86_400.0


@dg.op(
    name="purge_finished_uploads",
    retry_policy=RETRY_POLICY,
    description="Delete the files and status records of uploads finished more than the retention period ago.",
)
def purge_finished_uploads_op(context: dg.OpExecutionContext, uploads: UploadsResource) -> dg.Output[int]:
    settings = uploads.settings()
    days = settings.upload_retention_days
    if days == 0:
        context.log.info("AIMQ_UPLOAD_RETENTION_DAYS is 0: uploads are kept forever")
        return dg.Output(0, metadata={"deleted": 0, "retention_days": 0.0})

    def progress(report: PurgeReport) -> None:
        context.log.info(f"{len(report.deleted):,} uploads deleted so far ({report.bytes_freed / 1e6:,.1f} MB)")

    report = purge_finished(uploads.status_store(), uploads.storage(), older_than_s=days * _DAY_S, on_progress=progress)
    context.log.info(
        f"deleted {len(report.deleted):,} uploads finished more than {days:g} days ago "
        f"({report.bytes_freed / 1e6:,.1f} MB); kept {report.unfinished} older ones still queued or running"
    )
    return dg.Output(
        len(report.deleted),
        metadata={
            "deleted": len(report.deleted),
            "mb_freed": round(report.bytes_freed / 1e6, 3),
            "kept_unfinished": report.unfinished,
            "retention_days": float(days),
        },
    )


@dg.op(
    name="purge_dagster_runs",
    ins={"uploads_purged": dg.In(dg.Nothing)},
    retry_policy=RETRY_POLICY,
    description="Delete the Dagster runs (and event logs) of purged uploads, the upload sensors' ticks and this "
    "job's own runs older than the retention, all but the newest AIMQ_TRAINING_RUNS_KEPT training runs per model "
    "group, and the "
    "purged uploads' scored_uploads partitions with their check results.",
)
def purge_dagster_runs_op(context: dg.OpExecutionContext, uploads: UploadsResource) -> dg.Output[int]:
    settings = uploads.settings()
    report = RunPurgeReport()
    days = settings.upload_retention_days
    if days > 0:  # 0 keeps uploads forever, and so their runs
        purge_scoring_runs(
            context.instance,
            uploads.status_store(),
            older_than_s=days * _DAY_S,
            report=report,
            on_progress=lambda done: context.log.info(f"{done:,} scoring runs deleted so far"),
        )
        purge_purge_runs(context.instance, older_than_s=days * _DAY_S, report=report)
        ticked = purge_upload_sensor_ticks(context.instance, older_than_s=days * _DAY_S)
        monitoring = purge_monitoring(context.instance, uploads.status_store(), older_than_s=days * _DAY_S)
    else:
        monitoring = MonitoringPurgeReport()
        ticked = []
    purge_training_runs(context.instance, keep_per_group=settings.training_runs_kept, report=report)
    context.log.info(
        f"deleted {report.scoring_runs_deleted:,} scoring runs of purged uploads (kept {report.scoring_runs_kept:,} "
        f"older ones whose uploads are kept), {report.purge_runs_deleted:,} runs of this job older than the "
        f"retention and {report.training_runs_deleted:,} training runs beyond the newest "
        f"{settings.training_runs_kept} per group; {monitoring.partitions_deleted:,} scored_uploads partitions "
        f"of purged uploads with {monitoring.check_results_deleted:,} check results, and "
        f"{monitoring.history_runs_deleted:,} drift_history refresh runs older than the retention; the skipped "
        f"and successful ticks older than the retention of {len(ticked)} sensors ({', '.join(ticked) or 'none'})"
    )
    return dg.Output(
        report.scoring_runs_deleted + report.purge_runs_deleted + report.training_runs_deleted,
        metadata={
            "scoring_runs_deleted": report.scoring_runs_deleted,
            "scoring_runs_kept": report.scoring_runs_kept,
            "purge_runs_deleted": report.purge_runs_deleted,
            "training_runs_deleted": report.training_runs_deleted,
            "training_runs_kept_per_group": settings.training_runs_kept,
            "scored_upload_partitions_deleted": monitoring.partitions_deleted,
            "check_results_deleted": monitoring.check_results_deleted,
            "drift_history_runs_deleted": monitoring.history_runs_deleted,
            "sensors_whose_old_ticks_were_purged": dg.MetadataValue.json(ticked),
        },
    )


@dg.job(
    name=PURGE_JOB_NAME,
    executor_def=dg.in_process_executor,
    tags={"aimq/kind": "maintenance"},
    description="Delete finished uploads (files and status) older than AIMQ_UPLOAD_RETENTION_DAYS, then "
    "their Dagster runs and this job's own older runs, and training runs beyond AIMQ_TRAINING_RUNS_KEPT per group.",
)
def purge_uploads_job() -> None:
    purge_dagster_runs_op(uploads_purged=purge_finished_uploads_op())


purge_uploads_schedule = dg.ScheduleDefinition(
    name="purge_uploads",
    job=purge_uploads_job,
    cron_schedule=get_settings().upload_retention_cron,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Deletes finished uploads older than AIMQ_UPLOAD_RETENTION_DAYS (0 keeps them).",
)
