"""Stage 2: the versioned feature spec that training and serving both encode with."""

import dagster as dg
import pandas as pd

from aimq_pipelines.models.groups import group_name
from aimq_pipelines.models.training import spec_from_data
from aimq_serving.features import FeatureSpec


def build_feature_spec(group: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=[group, "feature_spec"],
        ins={"training_data": dg.AssetIn([group, "training_data"])},
        group_name=group_name(group),
        description="Column order, category vocabularies and numeric ranges, versioned by content hash.",
    )
    def feature_spec(training_data: pd.DataFrame) -> dg.Output[FeatureSpec]:
        spec = spec_from_data(training_data)
        return dg.Output(
            spec,
            metadata={
                "spec_version": spec.version,
                "columns": dg.MetadataValue.json(list(spec.columns)),
                "vocabularies": dg.MetadataValue.json({k: list(v) for k, v in spec.categorical.items()}),
            },
        )

    return feature_spec
