"""The served models on ONNX Runtime 1.11.0, the runtime inside the RedisAI that compose and k8s deploy
(RedisAI 1.2.7), from npm's onnxruntime-node@1.11.0 (tests/helpers/ort11.py): every model that
served_model stores runs there and prices the sample files as the in-process ONNX Runtime does, and a
model beyond that runtime's limits never reaches the store."""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg
import numpy as np
import onnx
import pandas as pd
import pytest
import redis

from aimq_pipelines.models.onnx_export import MAX_IR_VERSION, MAX_OPSET, export_onnx
from aimq_pipelines.models.training import TrainedModel
from aimq_serving import redisai, schema
from aimq_serving.loaded_models import LoadedModel
from aimq_serving.model_store import ModelStore
from tests.helpers import ort11
from tests.helpers.model_chain import export_and_serve
from tests.helpers.paths import SAMPLES

pytestmark = ort11.needs_ort11
SAMPLE_FILES = ("1_row.xlsx", "100_rows.xlsx")


def test_the_runtime_is_onnx_runtime_1_11_0() -> None:
    # A one-node model at the limits: the runtime that loads and runs it says its version and library.
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 2])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 2])],
    )
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", MAX_OPSET)])
    proto.ir_version = MAX_IR_VERSION
    answer = ort11.run(proto.SerializeToString(), np.array([[1.5, -2.0]], dtype=np.float32))
    assert (answer.runtime, answer.library) == (ort11.VERSION, f"libonnxruntime.so.{ort11.VERSION}")
    assert answer.loaded, answer.error
    np.testing.assert_array_equal(answer.outputs["y"], [[1.5, -2.0]])


@pytest.mark.parametrize("group", schema.MODEL_GROUPS)
def test_every_served_model_prices_the_samples_in_onnx_runtime_1_11_as_in_process(
    trained_store: ModelStore, group: str
) -> None:
    stored = trained_store.get(group)
    model = LoadedModel.from_stored(stored)
    priced = 0
    for name in SAMPLE_FILES:
        frame = pd.read_excel(SAMPLES / name, keep_default_na=False)
        rows = frame[frame["model_group"] == group]
        if rows.empty:
            continue
        matrix, valid, errors = model.spec.encode_frame(rows)
        assert valid.all(), errors
        # The bytes the RedisAI backend sends with AI.TENSORSET, and the model bytes served_model stored.
        answer = ort11.run(stored.onnx, redisai.input_tensor(matrix))
        assert answer.loaded, f"group {group}: ONNX Runtime 1.11 refused the served model: {answer.error}"
        # RedisAI answers the model's first output (AI.MODELEXECUTE ... OUTPUTS 1).
        first = next(iter(answer.outputs.values()))
        np.testing.assert_allclose(first.reshape(-1), model.predict_onnx(matrix), rtol=1e-5)
        priced += len(rows)
    assert priced > 0, f"no sample row of group {group}"


def _restamp_opset(proto: onnx.ModelProto) -> None:
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = MAX_OPSET + 1


def _restamp_ir(proto: onnx.ModelProto) -> None:
    proto.ir_version = MAX_IR_VERSION + 1


BEYOND = {
    # (change to a real export, what served_model says, what ONNX Runtime 1.11 says)
    "opset 17": (
        _restamp_opset,
        f"ONNX opset ai.onnx {MAX_OPSET + 1} is above {MAX_OPSET}",
        f"Current official support for domain ai.onnx is till opset {MAX_OPSET}",
    ),
    "IR 9": (
        _restamp_ir,
        f"ONNX IR version {MAX_IR_VERSION + 1} is above {MAX_IR_VERSION}",
        f"Unsupported model IR version: {MAX_IR_VERSION + 1}, max supported IR version: {MAX_IR_VERSION}",
    ),
}


def _beyond_limits_export(restamp: Callable[[onnx.ModelProto], None], made: list[bytes]) -> dg.AssetsDefinition:
    """Group A's onnx_model as a newer exporter would write it: the same graph, stamped beyond the limits."""

    @dg.asset(key=["A", "onnx_model"], ins={"trained_model": dg.AssetIn(["A", "trained_model"])}, group_name="model_A")
    def onnx_model(trained_model: TrainedModel) -> bytes:
        proto = onnx.load_from_string(export_onnx(trained_model.model, len(trained_model.spec.columns)))
        restamp(proto)
        made.append(proto.SerializeToString())
        return made[-1]

    return onnx_model


@pytest.mark.parametrize("beyond", BEYOND)
def test_a_model_beyond_onnx_runtime_1_11_is_refused_by_it_and_by_served_model_before_anything_is_stored(
    trained_store: ModelStore, instance: dg.DagsterInstance, redis_client: redis.Redis, beyond: str
) -> None:
    restamp, ours, theirs = BEYOND[beyond]
    keys_before = set(redis_client.scan_iter(match=f"{trained_store.prefix}:*", count=1000))
    versions_before = trained_store.version_numbers("A")
    made: list[bytes] = []
    result = export_and_serve("A", _beyond_limits_export(restamp, made), instance)
    # Today's ONNX Runtime runs it (the parity check passed); only the deployed one would not.
    assert [e.passed for e in result.get_asset_check_evaluations()] == [True]
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "A__served_model"
    assert f"group A: not stored: {ours}" in failure.step_failure_data.error.message
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert trained_store.version_numbers("A") == versions_before
    assert set(redis_client.scan_iter(match=f"{trained_store.prefix}:*", count=1000)) == keys_before

    [onnx_bytes] = made
    answer = ort11.load(onnx_bytes)
    assert not answer.loaded
    assert theirs in str(answer.error)
