"""The models domain: each group's chain (data -> features -> model -> ONNX -> model store), the
train_models job and the retrain schedule. Resources are bound once, in ``aimq_pipelines.definitions``."""

from __future__ import annotations

import dagster as dg

from aimq_pipelines.models.assets import MODEL_CHAINS
from aimq_pipelines.models.jobs import train_models_job
from aimq_pipelines.models.schedules import retrain_schedule

defs = dg.Definitions(
    assets=[a for a in MODEL_CHAINS if not isinstance(a, dg.AssetChecksDefinition)],
    asset_checks=[a for a in MODEL_CHAINS if isinstance(a, dg.AssetChecksDefinition)],
    jobs=[train_models_job],
    schedules=[retrain_schedule],
)
