"""Time to materialize the whole model chain, per stage, with model sizes and holdout metrics.

    .venv/bin/python -m benchmarks.pipeline_benchmark [--rows 100000]

Runs the real assets (generator, training, ONNX export and checks, model store) against the local
Redis under a throw-away key prefix and a temporary DAGSTER_HOME, the way `aimq train` does.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections import defaultdict

import dagster as dg

from aimq_pipelines.models.assets import MODEL_CHAINS
from aimq_pipelines.models.resources import ModelStoreResource, TrainingDataSource
from aimq_serving import schema
from benchmarks import report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000, help="rows per model group")
    args = parser.parse_args()
    prefix = f"aimqbench-{uuid.uuid4().hex[:8]}"
    model_store = ModelStoreResource(prefix=prefix)
    with tempfile.TemporaryDirectory() as home:
        os.environ.setdefault("AIMQ_DATA_DIR", home)
        with dg.DagsterInstance.ephemeral(tempdir=home) as instance:
            started = time.perf_counter()
            result = dg.materialize(
                MODEL_CHAINS,
                instance=instance,
                resources={
                    "io_manager": dg.FilesystemIOManager(base_dir=os.path.join(home, "storage")),
                    "model_store": model_store,
                    "training_source": TrainingDataSource(rows_per_group=args.rows),
                },
            )
            wall = time.perf_counter() - started
            step_seconds: dict[str, float] = defaultdict(float)
            starts: dict[str, float] = {}
            for entry in instance.all_logs(result.run_id):
                event = entry.dagster_event
                if event is None:
                    continue
                if event.event_type_value == "STEP_START":
                    starts[event.step_key] = entry.timestamp
                elif event.event_type_value == "STEP_SUCCESS":
                    step_seconds[event.step_key] = entry.timestamp - starts[event.step_key]
    store = model_store.store()
    try:
        rows = []
        for group in schema.MODEL_GROUPS:
            info = store.info(group, store.current_version(group))
            stage = lambda s, group=group: round(step_seconds.get(f"{group}__{s}", 0.0), 2)  # noqa: E731
            rows.append(
                [
                    group,
                    args.rows,
                    stage("training_data"),
                    stage("trained_model"),
                    stage("onnx_model"),
                    stage("served_model"),
                    round(info.metrics["r2"], 4),
                    round(info.metrics["mae"]),
                    f"{info.metrics['mape']:.2%}",
                    round(info.pickle_bytes / 1e6, 2),
                    round(info.onnx_bytes / 1e6, 2),
                ]
            )
    finally:
        store.clear()
    report.write(
        "pipeline",
        f"Model chain, 3 x {args.rows:,} rows: {wall:.1f} s wall for the whole run",
        f"python -m benchmarks.pipeline_benchmark --rows {args.rows}",
        ["group", "rows", "data s", "train s", "onnx s", "store s", "R2", "MAE", "MAPE", "pickle MB", "ONNX MB"],
        rows,
        extra={"wall_seconds": wall, "step_seconds": dict(step_seconds)},
        notes="Stage times are step durations from the run's events; wall includes Dagster's run overhead. "
        "Train includes the holdout plot; ONNX includes the export and the parity check.",
    )


if __name__ == "__main__":
    main()
