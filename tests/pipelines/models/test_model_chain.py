"""Real materializations of the model chain against the real Redis."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import numpy as np
import onnx
import pandas as pd
import pytest

from aimq_pipelines.models.onnx_export import MAX_IR_VERSION, MAX_ML_OPSET, MAX_OPSET, export_onnx, opsets
from aimq_pipelines.models.resources import ModelStoreResource, TrainingDataSource
from aimq_pipelines.models.synthetic import generate_listings
from aimq_pipelines.models.training import TrainedModel
from aimq_serving import schema
from aimq_serving.loaded_models import LoadedModel
from aimq_serving.model_store import ModelStore
from tests.helpers.model_chain import export_and_serve, group_chain
from tests.helpers.paths import SAMPLES

STAGES = ("training_data", "feature_spec", "trained_model", "drift_profile", "onnx_model", "served_model")


def test_whole_chain_materializes_for_every_group(training_run: dg.ExecuteInProcessResult) -> None:
    materialized = {tuple(e.asset_key.path) for e in training_run.get_asset_materialization_events()}
    assert materialized == {(g, s) for g in schema.MODEL_GROUPS for s in STAGES}
    evaluations = training_run.get_asset_check_evaluations()
    assert len(evaluations) == 4 * len(schema.MODEL_GROUPS)
    assert all(e.passed for e in evaluations), [e.description for e in evaluations if not e.passed]


@pytest.mark.parametrize("group", schema.MODEL_GROUPS)
def test_store_holds_the_new_version_as_current_with_metadata(
    trained_store: ModelStore, training_run: dg.ExecuteInProcessResult, group: str
) -> None:
    stored = trained_store.get(group)
    info = stored.info
    assert info.current and info.version == trained_store.current_version(group)
    assert info.metrics["r2"] > 0.9 and 0 < info.metrics["mape"] < 0.15 and info.metrics["mae"] > 0
    assert info.lineage["dagster_run_id"] == training_run.run_id
    assert re.fullmatch(r"[0-9a-f]{64}", info.lineage["data_hash"])
    assert info.lineage["spec_version"] == stored.spec.version == info.spec_version
    versions = opsets(stored.onnx)
    assert versions["ai.onnx"] <= MAX_OPSET and versions.get("ai.onnx.ml", 0) <= MAX_ML_OPSET
    assert versions["ir_version"] <= MAX_IR_VERSION


def test_onnx_and_sklearn_agree_on_the_sample_file(trained_store: ModelStore) -> None:
    frame = pd.read_excel(SAMPLES / "100_rows.xlsx", keep_default_na=False)
    for group, rows in frame.groupby("model_group"):
        model = LoadedModel.from_stored(trained_store.get(str(group)))
        matrix, valid, errors = model.spec.encode_frame(rows)
        assert valid.all(), errors
        np.testing.assert_allclose(model.predict_onnx(matrix), model.predict_sklearn(matrix), rtol=1e-4)


def _corrupted_onnx(group: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=[group, "onnx_model"],
        ins={"trained_model": dg.AssetIn([group, "trained_model"])},
        group_name=f"model_{group}",
    )
    def onnx_model(trained_model: TrainedModel) -> bytes:
        proto = onnx.load_from_string(export_onnx(trained_model.model, len(trained_model.spec.columns)))
        for node in proto.graph.node:
            for attr in node.attribute:
                if attr.name == "target_weights":  # every leaf value 2% off: a subtly broken export
                    attr.floats[:] = [w * 1.02 for w in attr.floats]
        return proto.SerializeToString()

    return onnx_model


def test_corrupted_export_fails_the_check_and_is_never_served(
    trained_store: ModelStore, instance: dg.DagsterInstance
) -> None:
    before = trained_store.current_version("A")
    result = export_and_serve("A", _corrupted_onnx("A"), instance)
    assert not result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == "matches_sklearn" and not evaluation.passed
    assert "differ by more than" in evaluation.description
    assert dg.AssetKey(["A", "served_model"]) not in {e.asset_key for e in result.get_asset_materialization_events()}
    assert trained_store.current_version("A") == before


def _materialize_training_data(source: TrainingDataSource, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        group_chain("B"),
        selection=[dg.AssetKey(["B", "training_data"])],
        instance=instance,
        resources={
            "io_manager": dg.FilesystemIOManager(),
            "training_source": source,
            "model_store": ModelStoreResource(),
        },
        raise_on_error=False,
    )


def test_user_csv_rows_that_violate_the_schema_are_counted(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    frame = generate_listings("B", 3_000, seed=7).astype(object)
    frame.loc[0, "color"] = "Plaid"
    frame.loc[1, "kilometers"] = "-5"
    frame.loc[2, schema.TARGET] = "free"
    frame.loc[3, "model_group"] = "C"
    frame.to_csv(tmp_path / "B.csv", index=False)
    result = _materialize_training_data(TrainingDataSource(csv_dir=str(tmp_path)), instance)
    assert result.success
    (event,) = result.get_asset_materialization_events()
    meta = event.materialization.metadata
    assert meta["rows_read"].value == 3_000 and meta["rows"].value == 2_996 and meta["rows_rejected"].value == 4
    assert meta["rejection_reasons"].value == {
        "color: unknown value": 1,
        "kilometers: '-5' must be a whole number in [0, 2000000]": 1,
        "price_in_local_currency: price must be a positive number": 1,
        "model_group: row is not of group B": 1,
    }
    assert len(result.output_for_node("B__training_data")) == 2_996


def test_too_few_valid_rows_fail_the_blocking_check(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    generate_listings("B", 500).to_csv(tmp_path / "B.csv", index=False)
    result = _materialize_training_data(TrainingDataSource(csv_dir=str(tmp_path)), instance)
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and "500 valid rows (need 1000)" in evaluation.description


def test_missing_csv_is_a_clear_failure(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    result = _materialize_training_data(TrainingDataSource(csv_dir=str(tmp_path)), instance)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "training data for group B not found" in failure.step_failure_data.user_failure_data.description
