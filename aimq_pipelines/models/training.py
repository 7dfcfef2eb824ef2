"""Training, evaluation and plotting: plain functions that the assets call and tests can reuse."""

from __future__ import annotations

import base64
import hashlib
import io
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from aimq_serving import conformal, schema
from aimq_serving.conformal import Calibration
from aimq_serving.features import FeatureSpec, RowError
from aimq_serving.reference import Reference

if TYPE_CHECKING:
    from sklearn.ensemble import HistGradientBoostingRegressor

# scikit-learn is imported inside the functions that train: every run process (a scoring run too)
# imports this code location, and sklearn (with scipy) is ~1.5 s of that import on 2 cores.


@dataclass(frozen=True)
class ValidatedData:
    frame: pd.DataFrame  # the valid rows only
    rejected: int
    reasons: dict[str, int]  # "field: message kind" -> rows
    examples: list[dict[str, Any]]


def validate_training_frame(frame: pd.DataFrame, group: str) -> ValidatedData:
    """Keep the rows that match the schema and have a positive price; count the rest by reason."""
    spec = FeatureSpec.from_schema()
    _, valid, errors = spec.encode_frame(frame)
    price = pd.to_numeric(frame.get(schema.TARGET), errors="coerce") if schema.TARGET in frame else None
    if price is None:
        raise ValueError(f"training data for group {group} has no {schema.TARGET} column")
    bad_price = ~(price > 0).to_numpy()
    errors += [RowError(int(i), schema.TARGET, "price must be a positive number") for i in np.flatnonzero(bad_price)]
    valid &= ~bad_price
    wrong_group = (frame[schema.GROUP_FIELD].astype("string") != group).to_numpy(dtype=bool, na_value=True)
    errors += [
        RowError(int(i), schema.GROUP_FIELD, f"row is not of group {group}") for i in np.flatnonzero(wrong_group)
    ]
    valid &= ~wrong_group
    reasons: dict[str, int] = {}
    for err in errors:
        kind = err.message.split(" ")[0] if err.message.startswith("unknown") else err.message
        key = f"{err.field}: {'unknown value' if err.message.startswith('unknown') else kind}"
        reasons[key] = reasons.get(key, 0) + 1
    clean = frame.loc[valid, list(schema.INPUT_COLUMNS) + [schema.TARGET]].reset_index(drop=True)
    clean[schema.TARGET] = price[valid].to_numpy(dtype=np.float64)
    return ValidatedData(clean, int((~valid).sum()), reasons, [e.as_dict() for e in errors[:10]])


def frame_hash(frame: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()


def spec_from_data(frame: pd.DataFrame) -> FeatureSpec:
    """The schema's encoding restricted to the categories the data contains.

    A category the model never saw in training cannot be priced, so it is refused at serving time
    with the list of values that can, rather than silently given an arbitrary code.
    """
    base = FeatureSpec.from_schema()
    categorical = {}
    for name, values in base.categorical.items():
        present = set(frame[name].unique().tolist())
        categorical[name] = tuple(v for v in values if v in present)
    return FeatureSpec(columns=base.columns, categorical=categorical, numeric=base.numeric)


@dataclass
class TrainedModel:
    model: HistGradientBoostingRegressor
    spec: FeatureSpec
    holdout_x: np.ndarray
    holdout_y: np.ndarray
    metrics: dict[str, float]
    calibration: Calibration
    reference: Reference  # the fitted rows' numeric ranges: beyond them a row is flagged out_of_range


# The level whose holdout coverage and width the metrics report (the API's default).
REPORTED_COVERAGE = 0.9


def train(
    frame: pd.DataFrame,
    spec: FeatureSpec,
    *,
    max_iter: int = 300,
    learning_rate: float = 0.1,
    max_leaf_nodes: int = 31,
    holdout_fraction: float = 0.2,
    calibration_fraction: float = 0.1,
    seed: int = 0,
) -> TrainedModel:
    """Fit on the rows left after two random, disjoint splits of one seeded permutation: the holdout
    (``holdout_fraction``: quality metrics, ONNX parity) and the calibration split
    (``calibration_fraction``: the conformal ranges). The model fits neither; the numeric ranges of
    the rows it fits are its reference (``out_of_range`` flags)."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    features, valid, errors = spec.encode_frame(frame)
    if errors:
        raise ValueError(f"training data does not match its feature spec: {errors[0].as_dict()}")
    target = frame[schema.TARGET].to_numpy(dtype=np.float64)
    order = np.random.default_rng(seed).permutation(len(frame))
    n_holdout = max(1, int(len(frame) * holdout_fraction))
    n_calibration = max(conformal.MIN_CALIBRATION_ROWS, int(len(frame) * calibration_fraction))
    test, calibrate = order[:n_holdout], order[n_holdout : n_holdout + n_calibration]
    fit = order[n_holdout + n_calibration :]
    model = HistGradientBoostingRegressor(
        max_iter=max_iter, learning_rate=learning_rate, max_leaf_nodes=max_leaf_nodes, random_state=seed
    )
    started = time.perf_counter()
    # OpenMP with default threads on 2 shared cores: 48 s; with one thread: 1.6 s.
    with threadpool_limits(limits=1, user_api="openmp"):
        model.fit(features[fit], target[fit])
        predicted = model.predict(features[test])
        calibration_predicted = model.predict(features[calibrate])
    fit_seconds = time.perf_counter() - started
    split = {"fraction": calibration_fraction, "seed": seed, "rows": int(len(calibrate))}
    calibration = Calibration.fit(target[calibrate], calibration_predicted, split)
    metrics = holdout_metrics(target[test], predicted)
    low, high = conformal.bounds(predicted, calibration.factor(REPORTED_COVERAGE))
    metrics.update(
        fit_seconds=round(fit_seconds, 3),
        train_rows=int(len(fit)),
        holdout_rows=int(len(test)),
        calibration_rows=int(len(calibrate)),
        # How the 90 % range did on the holdout: a first look; the benchmark measures it on fresh data.
        holdout_coverage_90=float(np.mean((target[test] >= low) & (target[test] <= high))),
        holdout_mean_width_90=float(np.mean(high - low)),
    )
    reference = Reference.fit(spec.columns, features[fit], [f.name for f in schema.NUMERIC])
    return TrainedModel(model, spec, features[test], target[test], metrics, calibration, reference)


def holdout_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, mean_absolute_percentage_error, r2_score

    return {
        "r2": float(r2_score(actual, predicted)),
        "mae": float(mean_absolute_error(actual, predicted)),
        "mape": float(mean_absolute_percentage_error(actual, predicted)),
    }


def predicted_vs_actual_png(actual: np.ndarray, predicted: np.ndarray, title: str, max_points: int = 4000) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    take = np.random.default_rng(0).permutation(len(actual))[:max_points]
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=90)
    ax.scatter(actual[take], predicted[take], s=4, alpha=0.35, color="#4f46e5", linewidths=0)
    lo, hi = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    ax.plot([lo, hi], [lo, hi], color="#dc2626", linewidth=1, label="perfect prediction")
    ax.set_xlabel("actual price")
    ax.set_ylabel("predicted price")
    ax.set_title(title)
    ax.legend(loc="upper left")
    thousands = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:,.0f}k")
    ax.xaxis.set_major_formatter(thousands)
    ax.yaxis.set_major_formatter(thousands)
    ax.grid(alpha=0.25)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def png_markdown(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
