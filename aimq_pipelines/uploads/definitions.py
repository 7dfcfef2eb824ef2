"""The uploads domain: the scoring jobs, the RabbitMQ sensor that starts them and the run-failure
sensor that retries or dead-letters them, the purge job and its schedule. Resources are bound once,
in ``aimq_pipelines.definitions``."""

from __future__ import annotations

import dagster as dg

from aimq_pipelines.uploads.jobs import score_upload_job, score_uploads_job
from aimq_pipelines.uploads.purge import purge_uploads_job, purge_uploads_schedule
from aimq_pipelines.uploads.run_failures import upload_run_failure
from aimq_pipelines.uploads.sensors import UPLOAD_SENSORS

defs = dg.Definitions(
    jobs=[score_upload_job, score_uploads_job, purge_uploads_job],
    sensors=[*UPLOAD_SENSORS, upload_run_failure],
    schedules=[purge_uploads_schedule],
)
