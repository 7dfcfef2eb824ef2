"""The AIMQ code location."""

from __future__ import annotations

import dagster as dg

from aimq_pipelines.assets import MODEL_CHAINS
from aimq_pipelines.jobs import train_models_job
from aimq_pipelines.resources import ModelStoreResource, TrainingDataSource
from aimq_pipelines.schedules import purge_uploads_schedule, retrain_schedule
from aimq_pipelines.scoring.job import score_upload_job, score_uploads_job
from aimq_pipelines.scoring.resources import UploadsResource
from aimq_pipelines.scoring.retention import purge_uploads_job
from aimq_pipelines.sensors import upload_run_failure, upload_sensor
from aimq_serving.settings import get_settings


def build_resources() -> dict[str, dg.ConfigurableResource | dg.ConfigurableIOManager]:
    settings = get_settings()
    return {
        # On disk under DAGSTER_HOME even for in-process runs (CLI, tests), so one stage can be
        # re-materialized later from the UI with its upstream loaded from the last run.
        "io_manager": dg.FilesystemIOManager(),
        "model_store": ModelStoreResource(),
        "uploads": UploadsResource(),
        "training_source": TrainingDataSource(
            rows_per_group=settings.training_rows_per_group,
            csv_dir=str(settings.training_csv_dir) if settings.training_csv_dir else None,
        ),
    }


defs = dg.Definitions(
    assets=[a for a in MODEL_CHAINS if not isinstance(a, dg.AssetChecksDefinition)],
    asset_checks=[a for a in MODEL_CHAINS if isinstance(a, dg.AssetChecksDefinition)],
    jobs=[train_models_job, score_upload_job, score_uploads_job, purge_uploads_job],
    sensors=[upload_sensor, upload_run_failure],
    schedules=[retrain_schedule, purge_uploads_schedule],
    resources=build_resources(),
)
