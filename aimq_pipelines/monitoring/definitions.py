"""The monitoring domain: the scored_uploads asset and its checks (reported by the scoring runs), each
group's drift_history and the sensor that refreshes it, and the drift_retrain sensor. Resources are
bound once, in ``aimq_pipelines.definitions``."""

from __future__ import annotations

import dagster as dg

from aimq_pipelines.monitoring.history import DRIFT_HISTORIES, drift_history_refresh, refresh_drift_history_job
from aimq_pipelines.monitoring.retrain import drift_retrain
from aimq_pipelines.monitoring.scored_uploads import input_drift, input_schema, scored_uploads

defs = dg.Definitions(
    assets=[scored_uploads, *DRIFT_HISTORIES],
    asset_checks=[input_drift, input_schema],
    jobs=[refresh_drift_history_job],
    sensors=[drift_retrain, drift_history_refresh],
)
