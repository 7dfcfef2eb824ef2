"""How often the price ranges hold the true price, and how wide they are, over many seeds.

For each training seed the pipeline's own ``train`` (the same splits: holdout, calibration, fit)
fits each group's model on generated listings; fresh listings from seeds training never used are
then priced, and each range checked against the true price. Two nonconformity scores are measured
on the same calibration rows: the one AIMQ stores (``|log price - log predicted|``: a range that
follows the row) and the absolute error (one width for every row), at the same coverage.

    python -m benchmarks.coverage_benchmark                  # 5 training seeds x 10 fresh seeds
    python -m benchmarks.coverage_benchmark --train-seeds 2 --fresh-seeds 4 --rows 30000
"""

from __future__ import annotations

import argparse

import numpy as np

from aimq_pipelines.models.synthetic import generate_listings
from aimq_pipelines.models.training import spec_from_data, train, validate_training_frame
from aimq_serving import conformal, schema
from benchmarks import report

FRESH_SEED_BASE = 10_000  # fresh data: seeds far from the training seeds (0, 1, ...)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000, help="training rows per group")
    parser.add_argument("--train-seeds", type=int, default=5)
    parser.add_argument("--fresh-seeds", type=int, default=10, help="fresh data sets per trained model")
    parser.add_argument("--fresh-rows", type=int, default=20_000)
    parser.add_argument("--coverage", type=float, default=0.9)
    args = parser.parse_args()

    rows = []
    per_run: list[dict] = []
    for group in schema.MODEL_GROUPS:
        log_cov, abs_cov, log_width, abs_width = [], [], [], []
        for train_seed in range(args.train_seeds):
            data = validate_training_frame(generate_listings(group, args.rows, seed=train_seed), group).frame
            trained = train(data, spec_from_data(data), seed=train_seed)
            # The absolute score on the same calibration rows: their predictions again, same split.
            order = np.random.default_rng(train_seed).permutation(len(data))
            n_holdout = int(len(data) * 0.2)
            n_cal = trained.metrics["calibration_rows"]
            cal = order[n_holdout : n_holdout + n_cal]
            features, _, _ = trained.spec.encode_frame(data)
            residual = np.sort(np.abs(data[schema.TARGET].to_numpy()[cal] - trained.model.predict(features[cal])))
            q_abs = residual[int(np.ceil((n_cal + 1) * args.coverage)) - 1]
            factor = trained.calibration.factor(args.coverage)
            for k in range(args.fresh_seeds):
                fresh_seed = FRESH_SEED_BASE + 1000 * train_seed + k
                fresh = generate_listings(group, args.fresh_rows, seed=fresh_seed)
                matrix, valid, _ = trained.spec.encode_frame(fresh)
                actual = fresh[schema.TARGET].to_numpy()[valid]
                predicted = trained.model.predict(matrix)
                low, high = conformal.bounds(predicted, factor)
                log_cov.append(float(np.mean((actual >= low) & (actual <= high))))
                log_width.append(float(np.mean(high - low)))
                abs_cov.append(float(np.mean(np.abs(actual - predicted) <= q_abs)))
                abs_width.append(float(2 * q_abs))
                per_run.append(
                    {
                        "group": group,
                        "train_seed": train_seed,
                        "fresh_seed": fresh_seed,
                        "coverage_log_ratio": log_cov[-1],
                        "mean_width_log_ratio": log_width[-1],
                        "coverage_absolute": abs_cov[-1],
                        "width_absolute": abs_width[-1],
                        "mean_price": float(np.mean(actual)),
                    }
                )
            print(group, train_seed, f"coverage {np.mean(log_cov[-args.fresh_seeds :]):.4f}", flush=True)
        rows.append(
            [
                group,
                len(log_cov),
                round(float(np.mean(log_cov)), 4),
                round(float(np.min(log_cov)), 4),
                round(float(np.max(log_cov)), 4),
                round(float(np.mean(log_width))),
                round(float(np.mean(abs_cov)), 4),
                round(float(np.mean(abs_width))),
                round(float(np.mean([r["mean_price"] for r in per_run if r["group"] == group]))),
            ]
        )
    level = f"{args.coverage:.0%}"
    report.write(
        "coverage",
        f"{level} price ranges on fresh data: coverage and mean width per group",
        "python -m benchmarks.coverage_benchmark"
        + f" --rows {args.rows} --train-seeds {args.train_seeds} --fresh-seeds {args.fresh_seeds}"
        + f" --fresh-rows {args.fresh_rows}",
        [
            "group",
            "runs (train x fresh seeds)",
            "coverage (stored: log ratio)",
            "min",
            "max",
            "mean width",
            "coverage (absolute error)",
            "width (absolute error)",
            "mean price",
        ],
        rows,
        extra={"runs": per_run, "coverage": args.coverage},
        notes=(
            "Each run: a model trained by the pipeline's `train` on generated listings (training seed), "
            "its range calibrated on its calibration split, then checked on fresh listings (another seed). "
            "min/max: the least and most covered run."
        ),
    )


if __name__ == "__main__":
    main()
