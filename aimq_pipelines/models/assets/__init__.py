"""The model chain, one per model group: data -> feature spec -> model -> (ONNX, drift profile) -> model store.

Per-group assets (key prefix = group) rather than partitions: the three chains are small, one run
materializes all of them in one process (no per-partition run overhead), and the asset graph shows
each group's chain with its checks side by side.
"""

from __future__ import annotations

import dagster as dg

from aimq_pipelines.models.assets.data import build_training_data
from aimq_pipelines.models.assets.export import build_onnx_model
from aimq_pipelines.models.assets.features import build_feature_spec
from aimq_pipelines.models.assets.profile import build_drift_profile
from aimq_pipelines.models.assets.promotion import build_champion_challenger
from aimq_pipelines.models.assets.serving import build_served_model
from aimq_pipelines.models.assets.training import build_trained_model
from aimq_pipelines.models.groups import group_name
from aimq_serving import schema


def build_model_chain(group: str) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    return [
        *build_training_data(group),
        build_feature_spec(group),
        *build_trained_model(group),
        build_champion_challenger(group),
        build_drift_profile(group),
        *build_onnx_model(group),
        build_served_model(group),
    ]


__all__ = ["MODEL_CHAINS", "build_model_chain", "group_name"]

MODEL_CHAINS = [item for group in schema.MODEL_GROUPS for item in build_model_chain(group)]
