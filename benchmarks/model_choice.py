"""Which estimator to serve: accuracy per byte and per microsecond, on one group's generated data.

    .venv/bin/python -m benchmarks.model_choice [--rows 100000] [--skip-original]

The original demo served RandomForestRegressor with unlimited depth; every candidate here is trained
on the same split, exported with the pipeline's own skl2onnx export, and timed in ONNX Runtime with
the serving session options (one row per call, and a 10,000-row batch).
"""

from __future__ import annotations

import argparse
import pickle
import time

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from threadpoolctl import threadpool_limits

from aimq_pipelines.models.onnx_export import export_onnx
from aimq_pipelines.models.synthetic import generate_listings
from aimq_pipelines.models.training import holdout_metrics, spec_from_data
from aimq_serving import schema
from aimq_serving.loaded_models import onnx_session
from benchmarks import report


def candidates(skip_original: bool) -> dict[str, object]:
    out = {
        "HistGradientBoosting 300 iter (served)": HistGradientBoostingRegressor(max_iter=300, random_state=0),
        "HistGradientBoosting 100 iter": HistGradientBoostingRegressor(max_iter=100, random_state=0),
        "RandomForest 100 trees, depth 12": RandomForestRegressor(n_estimators=100, max_depth=12, random_state=0),
    }
    if not skip_original:
        out["RandomForest 100 trees, unlimited depth (original)"] = RandomForestRegressor(
            n_estimators=100, random_state=0
        )
    return out


def time_onnx(onnx_bytes: bytes, features: np.ndarray) -> tuple[float, float]:
    session = onnx_session(onnx_bytes)
    name = session.get_inputs()[0].name
    single = features[:1]
    for _ in range(50):
        session.run(None, {name: single})
    samples = []
    for i in range(1000):
        row = features[i % len(features)][None, :]
        t = time.perf_counter()
        session.run(None, {name: row})
        samples.append(time.perf_counter() - t)
    batch = features[:10_000]
    t = time.perf_counter()
    session.run(None, {name: batch})
    per_row_batch = (time.perf_counter() - t) / len(batch)
    return float(np.median(samples)) * 1e6, per_row_batch * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--skip-original", action="store_true", help="skip the unlimited-depth forest (minutes, GBs)")
    args = parser.parse_args()
    frame = generate_listings("B", args.rows)
    spec = spec_from_data(frame)
    features, _, _ = spec.encode_frame(frame)
    target = frame[schema.TARGET].to_numpy()
    order = np.random.default_rng(0).permutation(len(frame))
    test, fit = order[: len(frame) // 5], order[len(frame) // 5 :]
    rows = []
    for name, model in candidates(args.skip_original).items():
        with threadpool_limits(1):
            t = time.perf_counter()
            model.fit(features[fit], target[fit])
            fit_s = time.perf_counter() - t
            metrics = holdout_metrics(target[test], model.predict(features[test]))
        pickle_mb = len(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)) / 1e6
        onnx_bytes = export_onnx(model, features.shape[1])
        single_us, batch_us = time_onnx(onnx_bytes, features[test])
        rows.append(
            [
                name,
                round(fit_s, 1),
                round(metrics["r2"], 4),
                f"{metrics['mape']:.2%}",
                round(pickle_mb, 2),
                round(len(onnx_bytes) / 1e6, 2),
                round(single_us, 1),
                round(batch_us, 2),
            ]
        )
        print(rows[-1], flush=True)
        del model, onnx_bytes
    report.write(
        "model_choice",
        f"Estimator comparison, group B, {args.rows:,} generated rows (80/20 split)",
        "python -m benchmarks.model_choice" + (" --skip-original" if args.skip_original else ""),
        [
            "estimator",
            "fit s (1 thread)",
            "R2",
            "MAPE",
            "pickle MB",
            "ONNX MB",
            "ONNX us/call, 1 row",
            "ONNX us/row, 10k batch",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
