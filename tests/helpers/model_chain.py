"""One model group's chain of assets and checks, with stages swapped for test doubles of the same key:
for `dg.materialize` of part of the chain."""

from __future__ import annotations

import dagster as dg

from aimq_pipelines.models.assets import MODEL_CHAINS


def group_chain(group: str, replace: dict[str, dg.AssetsDefinition] | None = None) -> list:
    """The group's assets and checks; ``replace`` maps a stage name (e.g. "onnx_model") to its double."""
    replace = replace or {}
    items = []
    for item in MODEL_CHAINS:
        if isinstance(item, dg.AssetChecksDefinition):
            if next(iter(item.check_keys)).asset_key.path[0] == group:
                items.append(item)
        else:
            key = next(iter(item.keys))
            if key.path[0] == group:
                items.append(replace.get(key.path[1], item))
    return items


def export_and_serve(
    group: str, onnx_model: dg.AssetsDefinition, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    """The group's onnx_model (a double) and served_model, materialized on the trained_model of the
    session's training run (read back by the filesystem IO manager)."""
    from aimq_pipelines.models.resources import ModelStoreResource, TrainingDataSource

    return dg.materialize(
        group_chain(group, {"onnx_model": onnx_model}),
        selection=[dg.AssetKey([group, "onnx_model"]), dg.AssetKey([group, "served_model"])],
        instance=instance,
        resources={
            "io_manager": dg.FilesystemIOManager(),
            "model_store": ModelStoreResource(),
            "training_source": TrainingDataSource(),
        },
        raise_on_error=False,
    )
