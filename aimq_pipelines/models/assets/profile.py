"""Stage 3b: the drift profile, what the model's training data looked like (aimq_serving/drift_profile.py)."""

import dagster as dg
import pandas as pd

from aimq_pipelines.models.groups import group_name
from aimq_pipelines.models.training import TrainedModel
from aimq_pipelines.monitoring.profile import build_profile
from aimq_serving.drift_profile import DriftProfile


def build_drift_profile(group: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=[group, "drift_profile"],
        ins={
            "training_data": dg.AssetIn([group, "training_data"]),
            "trained_model": dg.AssetIn([group, "trained_model"]),
        },
        group_name=group_name(group),
        description=(
            "Per feature its cells' training shares (deciles, categories, missing) and importance; the "
            "holdout's predictions and residuals: what each upload's drift is judged against."
        ),
    )
    def drift_profile(training_data: pd.DataFrame, trained_model: TrainedModel) -> dg.Output[DriftProfile]:
        profile = build_profile(training_data, trained_model)
        size = len(profile.to_json())  # raises past the 1 MB bound: such a profile is never stored
        return dg.Output(
            profile,
            metadata={
                "rows": profile.rows,
                "bytes": size,
                "importance": dg.MetadataValue.json(
                    {f.name: round(f.importance, 4) for f in sorted(profile.features, key=lambda f: -f.importance)}
                ),
                "residual_mean": dg.MetadataValue.float(profile.residuals["mean"]),
            },
        )

    return drift_profile
