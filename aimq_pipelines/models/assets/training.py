"""Stage 3: the scikit-learn model, with holdout metrics and a predicted-vs-actual plot."""

from collections.abc import Iterator

import dagster as dg
import pandas as pd
from pydantic import Field

from aimq_pipelines.models.groups import group_name
from aimq_pipelines.models.training import TrainedModel, png_markdown, predicted_vs_actual_png, train
from aimq_serving.features import FeatureSpec

MIN_R2 = 0.8
MAX_MAPE = 0.25


class TrainingConfig(dg.Config):
    max_iter: int = Field(default=300, ge=1, le=5000)
    learning_rate: float = Field(default=0.1, gt=0, le=1)
    max_leaf_nodes: int = Field(default=31, ge=2, le=1024)
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)
    calibration_fraction: float = Field(default=0.1, gt=0, lt=1)
    seed: int = 0


def build_trained_model(group: str) -> list[dg.AssetsDefinition]:
    key = dg.AssetKey([group, "trained_model"])

    @dg.asset(
        key=key,
        ins={
            "training_data": dg.AssetIn([group, "training_data"]),
            "feature_spec": dg.AssetIn([group, "feature_spec"]),
        },
        group_name=group_name(group),
        description="HistGradientBoostingRegressor: best accuracy per byte and per microsecond (docs/model-choice.md).",
        kinds={"scikitlearn"},
        check_specs=[
            dg.AssetCheckSpec(
                "holdout_quality",
                asset=key,
                blocking=True,
                description=f"Holdout R2 >= {MIN_R2} and MAPE <= {MAX_MAPE:.0%}: a worse model is never served.",
            )
        ],
    )
    def trained_model(
        context: dg.AssetExecutionContext,
        config: TrainingConfig,
        training_data: pd.DataFrame,
        feature_spec: FeatureSpec,
    ) -> Iterator:
        result = train(
            training_data,
            feature_spec,
            max_iter=config.max_iter,
            learning_rate=config.learning_rate,
            max_leaf_nodes=config.max_leaf_nodes,
            holdout_fraction=config.holdout_fraction,
            calibration_fraction=config.calibration_fraction,
            seed=config.seed,
        )
        m = result.metrics
        context.log.info(
            f"group {group}: R2 {m['r2']:.4f}, MAE {m['mae']:.0f}, MAPE {m['mape']:.2%} in {m['fit_seconds']} s"
        )
        plot = predicted_vs_actual_png(
            result.holdout_y, result.model.predict(result.holdout_x), f"Group {group}: holdout, R2 {m['r2']:.3f}"
        )
        yield dg.Output(
            result,
            metadata={
                "r2": dg.MetadataValue.float(m["r2"]),
                "mae": dg.MetadataValue.float(m["mae"]),
                "mape": dg.MetadataValue.float(m["mape"]),
                "fit_seconds": dg.MetadataValue.float(m["fit_seconds"]),
                "train_rows": m["train_rows"],
                "holdout_rows": m["holdout_rows"],
                "calibration_rows": m["calibration_rows"],
                "holdout_coverage_90": dg.MetadataValue.float(m["holdout_coverage_90"]),
                "holdout_mean_width_90": dg.MetadataValue.float(m["holdout_mean_width_90"]),
                # Beyond these a row is flagged out_of_range (aimq_serving/reference.py).
                "reference_ranges": dg.MetadataValue.json(result.reference.numeric),
                "estimator": dg.MetadataValue.json(result.model.get_params()),
                "predicted_vs_actual": dg.MetadataValue.md(png_markdown(plot, "predicted vs actual")),
            },
        )
        passed = m["r2"] >= MIN_R2 and m["mape"] <= MAX_MAPE
        yield dg.AssetCheckResult(
            check_name="holdout_quality",
            passed=passed,
            metadata={"r2": m["r2"], "mape": m["mape"]},
            description=None
            if passed
            else f"R2 {m['r2']:.3f} (min {MIN_R2}), MAPE {m['mape']:.1%} (max {MAX_MAPE:.0%})",
        )

    return [trained_model]


__all__ = ["TrainedModel", "build_trained_model"]
