"""The ``train_models`` job: every group's model chain, in one process (or one group's, by asset selection)."""

from __future__ import annotations

import dagster as dg

from aimq_pipelines.models.groups import group_name
from aimq_serving import schema

MODEL_SELECTION = dg.AssetSelection.groups(*(group_name(g) for g in schema.MODEL_GROUPS))

# In-process: the 15 steps are short (seconds), and a process per step would spend more time
# importing sklearn and dagster than training on 2 cores.
train_models_job = dg.define_asset_job(
    "train_models",
    selection=MODEL_SELECTION,
    executor_def=dg.in_process_executor,
    description="Materialize the model chain of every model group and promote the new versions.",
)


def groups_trained(run: dg.DagsterRun) -> set[str]:
    """The model groups a train_models run trains (a run without an asset selection trains all)."""
    if not run.asset_selection:
        return set(schema.MODEL_GROUPS)
    return {key.path[0] for key in run.asset_selection if key.path[0] in schema.MODEL_GROUPS}
