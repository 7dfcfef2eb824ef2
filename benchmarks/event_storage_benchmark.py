"""The local instance's storage: Dagster's SQLite storage against aimq's PooledSqliteStorage (the same
files, connections kept), in the same run.

    .venv/bin/python -m benchmarks.event_storage_benchmark [--events 500] [--uploads 25] [--repeats 3]

- event: one log event stored in a run's event log (``report_engine_event``), ms each;
- backlog-shaped run: an in-process run of the shape of a ``score_uploads`` run without the scoring:
  ``--uploads`` dynamic steps, each with two log lines, an asset materialization and two asset check
  results, as each upload of a backlog run stores them (docs/batch.md, "Issue 26, fourth round");
- new run file: a new run's first event, which makes its event-log file (the daemon does it for every
  run it submits), ms each;
- first read of a run file: another instance (as another process: the run's own, the webserver) reads
  a run's events for the first time, ms each (docs/batch.md, "Issue 26, fifth round").

Each storage gets a fresh DAGSTER_HOME; the two alternate ``--repeats`` times and the median is shown.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import yaml

from benchmarks import report

STORAGES = {
    "Dagster's SqliteStorage (default)": None,
    "PooledSqliteStorage (aimq up)": {
        "custom": {"module": "aimq_pipelines.sqlite_storage", "class": "PooledSqliteStorage", "config": {}}
    },
}

PRICES = dg.AssetKey(["bench", "scored"])


@dg.op(out=dg.DynamicOut(int), config_schema={"uploads": int})
def list_items(context: dg.OpExecutionContext):  # noqa: ANN201 - Dagster reads the generator's outputs
    for n in range(context.op_config["uploads"]):
        yield dg.DynamicOutput(n, mapping_key=str(n))


@dg.op
def score_item(context: dg.OpExecutionContext, item: int) -> None:
    context.log.info(f"scoring {item}")
    context.log_event(dg.AssetMaterialization(PRICES, partition=str(item), metadata={"rows": 1}))
    for check in ("input_schema", "drift"):
        context.log_event(dg.AssetCheckEvaluation(asset_key=PRICES, check_name=check, passed=True, partition=str(item)))
    context.log.info(f"scored {item}")


@dg.job(executor_def=dg.in_process_executor)
def backlog_shaped() -> None:
    list_items().map(score_item)


def home_for(storage: dict | None) -> Path:
    home = Path(tempfile.mkdtemp(prefix="aimq-event-bench-"))
    config: dict = {"telemetry": {"enabled": False}}
    if storage is not None:
        storage = {"custom": {**storage["custom"], "config": {"base_dir": str(home)}}}
        config["storage"] = storage
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def measure(storage: dict | None, events: int, uploads: int, runs: int) -> tuple[float, float, float, float]:
    home = home_for(storage)
    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        one = {"ops": {"list_items": {"config": {"uploads": 1}}}}
        run = instance.create_run_for_job(backlog_shaped, run_config=one)
        instance.report_engine_event("warm", run)
        new_runs = [instance.create_run_for_job(backlog_shaped, run_config=one) for _ in range(runs)]
        started = time.perf_counter()
        for new in new_runs:
            instance.report_engine_event("first", new)
        new_file_ms = (time.perf_counter() - started) / runs * 1000
        with dg.DagsterInstance.from_config(str(home)) as reader:
            reader.all_logs(run.run_id)  # its index and first file: what every process pays once
            started = time.perf_counter()
            for new in new_runs:
                assert len(reader.all_logs(new.run_id)) == 1
            first_read_ms = (time.perf_counter() - started) / runs * 1000
        started = time.perf_counter()
        for n in range(events):
            instance.report_engine_event(f"event {n}", run)
        per_event_ms = (time.perf_counter() - started) / events * 1000
        config = {"ops": {"list_items": {"config": {"uploads": uploads}}}}
        backlog_shaped.execute_in_process(run_config=config, instance=instance)  # warm: tables, imports
        started = time.perf_counter()
        result = backlog_shaped.execute_in_process(run_config=config, instance=instance)
        run_s = time.perf_counter() - started
        assert result.success
    shutil.rmtree(home, ignore_errors=True)
    return per_event_ms, run_s, new_file_ms, first_read_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--uploads", type=int, default=25)
    parser.add_argument("--runs", type=int, default=10, help="new runs whose files are made and read")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in STORAGES}
    load = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        for name, storage in STORAGES.items():
            results[name].append(measure(storage, args.events, args.uploads, args.runs))
    load.append(os.getloadavg()[0])
    base = [statistics.median(x[i] for x in results[next(iter(STORAGES))]) for i in range(4)]
    rows = []
    for name, values in results.items():
        row: list[object] = [name]
        for i in range(4):
            value = statistics.median(v[i] for v in values)
            row += [round(value, 2), round(base[i] / value, 2)]
        rows.append(row)
    report.write(
        "event_storage",
        "The local instance's storage: Dagster's SQLite storage and PooledSqliteStorage",
        "python -m benchmarks.event_storage_benchmark " + " ".join(sys.argv[1:]),
        [
            "storage",
            "ms per event",
            "x faster",
            f"backlog-shaped run of {args.uploads} uploads, s",
            "x faster",
            "new run file, ms",
            "x faster",
            "first read of a run file, ms",
            "x faster",
        ],
        rows,
        extra={"raw": results, "loadavg_1m": load},
        notes=f"Medians of {args.repeats} alternating repeats; load average (1 min) {load[0]:.1f} before, "
        f"{load[1]:.1f} after, 2 cores shared with other work. A backlog-shaped run: per upload a dynamic step "
        "with two log lines, an asset materialization and two asset check results (no scoring).",
    )


if __name__ == "__main__":
    main()
