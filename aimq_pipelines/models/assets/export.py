"""Stage 4: the ONNX export, checked against the sklearn model on the holdout."""

import dagster as dg
import numpy as np

from aimq_pipelines.models.groups import group_name
from aimq_pipelines.models.onnx_export import DEPLOYED_REDISAI, MAX_ML_OPSET, MAX_OPSET, export_onnx, opsets
from aimq_pipelines.models.training import TrainedModel
from aimq_serving.loaded_models import onnx_session

# Tree ensembles in ONNX Runtime sum leaf values in float32, sklearn in float64: on prices of about
# 1e6 the sums differ by a few currency units, which is large *relative* to a near-worthless car.
# So the tolerance is numpy's isclose form: rtol on the prediction plus atol on the price scale.
# A broken export misses by orders of magnitude more.
RTOL = 1e-4
ATOL_OF_MEAN_PRICE = 1e-5


def onnx_parity(onnx_bytes: bytes, trained: TrainedModel) -> dict[str, float | bool]:
    session = onnx_session(onnx_bytes)
    features = trained.holdout_x.astype(np.float32)
    onnx_pred = session.run(None, {session.get_inputs()[0].name: features})[0].reshape(-1).astype(np.float64)
    sk_pred = trained.model.predict(features)
    atol = ATOL_OF_MEAN_PRICE * float(np.mean(np.abs(trained.holdout_y)))
    diff = np.abs(onnx_pred - sk_pred)
    within = diff <= RTOL * np.abs(sk_pred) + atol
    return {
        "passed": bool(within.all()),
        "rows_outside_tolerance": int((~within).sum()),
        "max_abs_error": float(diff.max()),
        "max_relative_error": float((diff / np.maximum(np.abs(sk_pred), atol / RTOL)).max()),
        "rtol": RTOL,
        "atol": atol,
        "rows": int(len(diff)),
    }


def build_onnx_model(group: str) -> list:
    @dg.asset(
        key=[group, "onnx_model"],
        ins={"trained_model": dg.AssetIn([group, "trained_model"])},
        group_name=group_name(group),
        description=(
            f"skl2onnx export, ai.onnx opset <= {MAX_OPSET} and ai.onnx.ml <= {MAX_ML_OPSET}: "
            f"what {DEPLOYED_REDISAI} runs."
        ),
        kinds={"onnx"},
    )
    def onnx_model(trained_model: TrainedModel) -> dg.Output[bytes]:
        onnx_bytes = export_onnx(trained_model.model, len(trained_model.spec.columns))
        return dg.Output(
            onnx_bytes,
            metadata={"bytes": len(onnx_bytes), "opsets": dg.MetadataValue.json(opsets(onnx_bytes))},
        )

    @dg.asset_check(
        asset=onnx_model,
        name="matches_sklearn",
        blocking=True,
        additional_ins={"trained_model": dg.AssetIn([group, "trained_model"])},
        description=(
            f"ONNX and sklearn agree on every holdout row within rtol {RTOL:g} "
            f"(+ atol {ATOL_OF_MEAN_PRICE:g} x mean price)."
        ),
    )
    def matches_sklearn(onnx_model: bytes, trained_model: TrainedModel) -> dg.AssetCheckResult:
        try:
            parity = onnx_parity(onnx_model, trained_model)
        except Exception as exc:  # an export that ONNX Runtime cannot even load fails the check
            return dg.AssetCheckResult(passed=False, description=f"ONNX Runtime cannot run the export: {exc}")
        passed = bool(parity.pop("passed"))
        return dg.AssetCheckResult(
            passed=passed,
            metadata=parity,
            description=None
            if passed
            else (
                f"{parity['rows_outside_tolerance']} of {parity['rows']} holdout rows differ by more than "
                f"rtol {RTOL:g} + atol {parity['atol']:.3g} (max abs error {parity['max_abs_error']:.4g})"
            ),
        )

    return [onnx_model, matches_sklearn]
