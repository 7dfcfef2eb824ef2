"""The retrain schedule (AIMQ_RETRAIN_CRON)."""

from __future__ import annotations

import dagster as dg

from aimq_pipelines.models.jobs import train_models_job
from aimq_serving.settings import get_settings

retrain_schedule = dg.ScheduleDefinition(
    name="retrain_models",
    job=train_models_job,
    cron_schedule=get_settings().retrain_cron,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Re-materializes every group's model chain; a new version is served only if its checks pass.",
)
