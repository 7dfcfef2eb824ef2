"""Where the scoring runs of a deployment spent their time, from its Dagster instance (DAGSTER_HOME).

    python -m benchmarks.run_stages --since 1796630000 [--job score_upload]
    # a deployment whose instance only its containers reach (compose): run it there, from stdin
    scripts/compose-e2e.sh compose exec -T daemon python - --since 1796630000 < benchmarks/run_stages.py

For each finished run of ``--job`` created after ``--since`` (epoch seconds), the stages of
``benchmarks.small_files_benchmark`` (sensor = the upload's message created -> run created; queue ->
RUN_STARTING; launch -> RUN_START, the run process up; op -> RUN_SUCCESS), and where it was launched
(the run's ``aimq/launched_in`` tag); prints one JSON object: the medians per launch kind and the runs.
Depends on dagster and the standard library only, so it runs in any AIMQ container.
"""

from __future__ import annotations

import argparse
import json
import statistics
from datetime import datetime

import dagster as dg


def stages(instance: dg.DagsterInstance, record: dg.RunRecord) -> dict[str, float] | None:
    run = record.dagster_run
    message = ((run.run_config or {}).get("ops", {}).get("score_file") or {}).get("config") or {}
    if "created_at" not in message:
        return None
    stamps: dict[dg.DagsterEventType, float] = {}
    for entry in instance.all_logs(run.run_id):
        kind = entry.dagster_event.event_type if entry.dagster_event else None
        if kind in (dg.DagsterEventType.RUN_STARTING, dg.DagsterEventType.RUN_START, dg.DagsterEventType.RUN_SUCCESS):
            stamps.setdefault(kind, entry.timestamp)
    if len(stamps) < 3:
        return None
    created = record.create_timestamp.timestamp()
    queued = datetime.fromisoformat(str(message["created_at"]).replace("Z", "+00:00")).timestamp()
    return {
        "sensor": created - queued,
        "queue": stamps[dg.DagsterEventType.RUN_STARTING] - created,
        "launch": stamps[dg.DagsterEventType.RUN_START] - stamps[dg.DagsterEventType.RUN_STARTING],
        "op": stamps[dg.DagsterEventType.RUN_SUCCESS] - stamps[dg.DagsterEventType.RUN_START],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--since", type=float, required=True)
    parser.add_argument("--job", default="score_upload")
    args = parser.parse_args()
    with dg.DagsterInstance.get() as instance:
        records = instance.get_run_records(
            filters=dg.RunsFilter(job_name=args.job, statuses=[dg.DagsterRunStatus.SUCCESS]),
        )
        runs = []
        for record in records:
            if record.create_timestamp.timestamp() < args.since:
                continue
            found = stages(instance, record)
            if found is not None:
                runs.append({"launched_in": record.dagster_run.tags.get("aimq/launched_in", ""), **found})
    medians = {}
    for kind in sorted({r["launched_in"] for r in runs}):
        same = [r for r in runs if r["launched_in"] == kind]
        medians[kind or "default launcher"] = {
            "runs": len(same),
            **{k: round(statistics.median(r[k] for r in same), 3) for k in ("sensor", "queue", "launch", "op")},
        }
    print(json.dumps({"medians": medians, "runs": runs}))


if __name__ == "__main__":
    main()
