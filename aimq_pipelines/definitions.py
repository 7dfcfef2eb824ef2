"""The AIMQ code location: the models, uploads and monitoring domains merged, with the resources they share."""

from __future__ import annotations

import dagster as dg

from aimq_pipelines.models import definitions as models
from aimq_pipelines.models.resources import ModelStoreResource, TrainingDataSource
from aimq_pipelines.monitoring import definitions as monitoring
from aimq_pipelines.uploads import definitions as uploads
from aimq_pipelines.uploads.resources import UploadsResource
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


defs = dg.Definitions.merge(models.defs, uploads.defs, monitoring.defs, dg.Definitions(resources=build_resources()))
