"""Schedules: retraining (AIMQ_RETRAIN_CRON) and the upload purge (AIMQ_UPLOAD_RETENTION_CRON)."""

from __future__ import annotations

import dagster as dg

from aimq_pipelines.jobs import train_models_job
from aimq_pipelines.scoring.retention import purge_uploads_job
from aimq_serving.settings import get_settings

retrain_schedule = dg.ScheduleDefinition(
    name="retrain_models",
    job=train_models_job,
    cron_schedule=get_settings().retrain_cron,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Re-materializes every group's model chain; a new version is served only if its checks pass.",
)

purge_uploads_schedule = dg.ScheduleDefinition(
    name="purge_uploads",
    job=purge_uploads_job,
    cron_schedule=get_settings().upload_retention_cron,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Deletes finished uploads older than AIMQ_UPLOAD_RETENTION_DAYS (0 keeps them).",
)
