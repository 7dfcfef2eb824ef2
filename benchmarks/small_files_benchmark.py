"""Many small files: single-upload latency (1, 100, 1,000 rows) and bursts of one-row uploads,
against the original demo's way (one worker, one /predict/onnx request per row), same run.

    .venv/bin/python -m benchmarks.small_files_benchmark [--repeats 8] [--bursts 30 300]
    AIMQ_API_KEY=... .venv/bin/python -m benchmarks.small_files_benchmark --api-url http://127.0.0.1:8000 \
        --label compose     # a deployment that is already running (docker compose, a port-forward)

The real platform as processes, as in ``benchmarks.batch_benchmark`` (the API under uvicorn,
dagster-daemon with dagster.yaml as shipped for ``aimq up``, RabbitMQ, Redis), throw-away names.

- single: N uploads of each file, one after the other, independent (each after 5-10 s with nothing
  to do) and in rhythms (``--rhythms``: each sent 0, 1, 3, 7 s after the previous one succeeded, as
  a person or a script scoring files one after the other); upload -> ``succeeded`` is the status
  record's ``finished_at`` minus the moment the upload was sent, with the load average of each case.
  Where the time goes comes from the status record and Dagster's run record: sensor (broker confirm
  -> run created), queue (-> launching), launch (-> run process started), op (-> upload scored).
- burst: all uploads sent at once (8 client threads); the time until the last one succeeded and
  the median. Each upload must have exactly one run requested by the sensor and have been scored by
  it; meanwhile a client sends /predict/onnx every 0.2 s and counts failures.
- the original demo's way: one worker reads each file, sends one /predict/onnx request per row and
  writes the result file, file after file (the same files, this run, this API).

Against a running deployment (``--api-url``) it has no access to the Dagster instance: the stages
come from the status record alone (to op = broker confirm -> scoring op started), and "exactly once"
is what the statuses show (each upload succeeded, with its rows), not the runs' records.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from benchmarks import report
from benchmarks.batch_benchmark import Platform, generate, score_via_api
from benchmarks.stack import remove_throwaway, throwaway_env

REPO = Path(__file__).resolve().parents[1]
# Dagster's sensor daemon starts a tick at most this often (MIN_INTERVAL_LOOP_TIME).
SENSOR_CYCLE_S = 5.0
SAMPLES = REPO / "samples"


# A burst's statuses are polled this often (a single upload's every 0.05 s: the next one of a rhythm
# is sent once the previous result is seen). Polled 20 times a second, the client's requests and the
# API's answers would compete with the platform for the same 2 cores through a whole burst.
BURST_POLL_S = 0.5

# X-API-Key for a deployment that requires one (AIMQ_API_KEY).
HEADERS: dict[str, str] = {}


def upload(api: str, path: Path) -> tuple[str, float]:
    sent = time.time()
    response = httpx.post(f"{api}/upload", files={"file": (path.name, path.read_bytes())}, headers=HEADERS, timeout=60)
    response.raise_for_status()
    return response.json()["upload_id"], sent


def finished(api: str, upload_id: str, timeout_s: float = 900, poll_s: float = 0.05) -> dict[str, Any]:
    """The upload's status record once it finished. Its ``finished_at`` is what is measured, whatever
    the polling interval: a burst polls slowly so the client does not take CPU from the platform."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = httpx.get(f"{api}/uploads/{upload_id}", headers=HEADERS, timeout=10).json()
        if record["state"] in ("succeeded", "failed"):
            if record["state"] != "succeeded":
                raise RuntimeError(f"upload {upload_id} failed: {record['error']}")
            return record
        time.sleep(poll_s)
    raise RuntimeError(f"upload {upload_id} not finished within {timeout_s} s")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def breakdown(instance: Any, record: dict[str, Any]) -> dict[str, float]:
    """Seconds per stage of one upload, from its status record and Dagster's own event timestamps:
    sensor = broker confirm -> run created; queue = run created -> launching (RUN_STARTING: 0 when
    launched at once, else the run queue's wait); launch = -> run process started (RUN_START: the
    code server forks it, the run opens the instance); op = -> upload scored (resources, the scoring
    op, the status write)."""
    import dagster as dg

    if instance is None:  # a running deployment: the status record alone
        return {
            "to op": record["started_at"] - record["created_at"],
            "op": record["finished_at"] - record["started_at"],
        }
    run_id = record["run_id"]
    created = instance.get_run_record_by_id(run_id).create_timestamp.timestamp()
    stamps = {}
    for entry in instance.all_logs(run_id):
        kind = entry.dagster_event.event_type if entry.dagster_event else None
        if kind in (dg.DagsterEventType.RUN_STARTING, dg.DagsterEventType.RUN_START):
            stamps.setdefault(kind, entry.timestamp)
    starting, run_start = stamps[dg.DagsterEventType.RUN_STARTING], stamps[dg.DagsterEventType.RUN_START]
    return {
        "sensor": created - record["created_at"],
        "queue": starting - created,
        "launch": run_start - starting,
        "op": record["finished_at"] - run_start,
    }


def demo_way(api: str, files: list[Path], work: Path) -> float:
    """The original demo's worker: per file, read it, one request per row, write the result."""
    import pandas as pd

    started = time.perf_counter()
    with httpx.Client(base_url=api, headers=HEADERS, timeout=30) as client:
        for i, path in enumerate(files):
            frame = pd.read_excel(path, keep_default_na=False)
            prices = []
            for row in frame.to_dict("records"):
                body = {k: (int(v) if isinstance(v, float) else v) for k, v in row.items()}
                prices.append(client.post("/predict/onnx", json=[body]).json()[0]["predicted_price"])
            frame.assign(predicted_price=prices).to_excel(work / f"demo_{i}.xlsx", index=False)
    return time.perf_counter() - started


class PredictProbe:
    """Sends /predict/onnx every 0.2 s while a burst runs: the API must keep answering."""

    def __init__(self, api: str, body: dict[str, Any]):
        self.api, self.body = api, body
        self.latencies: list[float] = []
        self.failures = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.api, headers=HEADERS, timeout=10) as client:
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    client.post("/predict/onnx", json=self.body).raise_for_status()
                    self.latencies.append(time.perf_counter() - started)
                except httpx.HTTPError:
                    self.failures += 1
                self.stop.wait(0.2)

    def __enter__(self) -> PredictProbe:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def burst(api: str, instance: Any, path: Path, n: int, probe_body: dict[str, Any]) -> dict[str, Any]:
    from aimq_pipelines.uploads.jobs import runs_of_upload

    with PredictProbe(api, probe_body) as probe:
        started = time.time()
        with ThreadPoolExecutor(max_workers=8) as pool:
            ids = [upload_id for upload_id, _ in pool.map(lambda _: upload(api, path), range(n))]
        accepted = time.time() - started  # the last upload's 202
        records = [finished(api, i, poll_s=BURST_POLL_S) for i in ids]
    done = [r["finished_at"] - started for r in records]
    twice, runs_used = [], set()
    for upload_id, record in zip(ids, records):
        runs_used.add(record["run_id"])
        if instance is None:  # the status only: scored, each row once
            if record["rows_total"] != 1:
                twice.append(upload_id)
            continue
        runs = runs_of_upload(instance, upload_id)
        requested = [r for r in runs if "dagster/parent_run_id" not in r.tags]
        if len(requested) != 1 or requested[0].run_id != record["run_id"]:
            twice.append(upload_id)
    return {
        "n": n,
        "accepted_s": accepted,
        "timeline": run_timeline(instance, runs_used, started),
        "runs": len(runs_used),
        "last_s": max(done),
        "median_s": statistics.median(done),
        "files_per_s": n / max(done),
        "not_exactly_once": twice,
        "predict_ok": len(probe.latencies),
        "predict_failed": probe.failures,
        "predict_p95_ms": 1000 * pct(probe.latencies, 0.95) if probe.latencies else None,
    }


def run_timeline(instance: Any, run_ids: set[str], started: float) -> list[dict[str, Any]]:
    """Each run of a burst, in the order created: its uploads and when (s after the burst began) it
    was created, its process started and it ended; where a burst's time goes between the sensor,
    the run queue and the runs. Empty against a running deployment (no instance)."""
    if instance is None:
        return []
    import dagster as dg

    from aimq_pipelines.uploads.jobs import uploads_of

    records = instance.get_run_records(filters=dg.RunsFilter(run_ids=list(run_ids)))
    return [
        {
            "uploads": len(uploads_of(r.dagster_run)),
            "created_s": round(r.create_timestamp.timestamp() - started, 2),
            "started_s": round(r.start_time - started, 2) if r.start_time else None,
            "ended_s": round(r.end_time - started, 2) if r.end_time else None,
        }
        for r in sorted(records, key=lambda r: r.create_timestamp)
    ]


def timeline_summary(timeline: list[dict[str, Any]]) -> str:
    if not timeline:
        return ""
    created = [t["created_s"] for t in timeline]
    busy = sum(t["ended_s"] - t["started_s"] for t in timeline if t["started_s"] and t["ended_s"])
    return (
        f"runs created {min(created):.1f}-{max(created):.1f} s, "
        f"{sum(t['uploads'] for t in timeline) / busy:.1f} uploads per run-second; "
    )


def burst_row(
    api: str, instance: Any, path: Path, n: int, probe_body: dict[str, Any], work: Path, extra: dict[str, Any], how: str
) -> list[Any]:
    print(f"burst of {n} one-row uploads ({how}) ...", flush=True)
    result = burst(api, instance, path, n, probe_body)
    demo = demo_way(api, [path] * n, work)
    extra["bursts"][f"{n} {how}"] = {**result, "demo_s": demo}
    exactly_once = "yes" if not result["not_exactly_once"] else f"NO: {result['not_exactly_once']}"
    if instance is None:
        exactly_once += " (statuses only)"
    return [
        f"burst of {n} one-row files, {how}",
        round(result["median_s"], 2),
        round(result["last_s"], 2),
        f"{result['files_per_s']:.2f} files/s in {result['runs']} runs; all accepted at {result['accepted_s']:.1f} s; "
        + timeline_summary(result["timeline"])
        + f"exactly once: {exactly_once}; "
        f"/predict/onnx {result['predict_ok']} ok, {result['predict_failed']} failed, "
        f"p95 {result['predict_p95_ms']:.0f} ms",
        round(demo, 2),
        round(demo / result["last_s"], 2),
    ]


def single_case(
    api: str, instance: Any, path: Path, size: int, arrival: str, pause: Any, repeats: int, work: Path, extra: dict
) -> list[Any]:
    """``repeats`` uploads of ``path``, each sent ``pause()`` seconds after the previous one finished."""
    print(f"single uploads of {size} row(s), {arrival} ...", flush=True)
    latencies, stages = [], []
    loads = [os.getloadavg()[0]]
    for _ in range(repeats):
        time.sleep(pause())
        upload_id, sent = upload(api, path)
        record = finished(api, upload_id)
        latencies.append(record["finished_at"] - sent)
        stages.append(breakdown(instance, record))
    loads.append(os.getloadavg()[0])
    demo = demo_way(api, [path], work)
    where = {k: statistics.median(s[k] for s in stages) for k in stages[0]}
    extra["single"][f"{size} {arrival}"] = {
        "latencies_s": latencies,
        "stages_s": stages,
        "stages_median_s": where,
        "loadavg_1m": loads,
        "demo_s": demo,
    }
    return [
        f"1 file, {size:,} row(s), {arrival}",
        round(statistics.median(latencies), 2),
        round(pct(latencies, 0.95), 2),
        "; ".join(f"{k} {v:.2f}" for k, v in where.items()) + f"; load {loads[0]:.1f}-{loads[1]:.1f}",
        round(demo, 2),
        round(demo / statistics.median(latencies), 2),
    ]


def singles(
    api: str,
    instance: Any,
    files: dict[int, Path],
    args: argparse.Namespace,
    work: Path,
    extra: dict[str, Any],
    rows: list[list[Any]],
) -> None:
    # Independent arrivals: each upload meets an idle platform (no upload for a whole cycle of the
    # sensor daemon, 5 s, so its ticks wait again) at a random point of that cycle: a pause of
    # 5-10 s after the previous one finished. Rhythms: each upload sent a fixed pause after the
    # previous one finished, as a person or a script scoring files one after the other (0 s: back
    # to back). With one upload sensor, an upload that arrives after the tick that took the previous
    # one returned waits for the daemon's next loop (docs/batch.md, "Many small files").
    pauses = random.Random(14)
    for size in args.independent:
        rows.append(
            single_case(
                api,
                instance,
                files[size],
                size,
                "independent",
                lambda: SENSOR_CYCLE_S + pauses.uniform(0, SENSOR_CYCLE_S),
                args.repeats,
                work,
                extra,
            )
        )
    for gap in args.rhythms:
        for size in args.rhythm_sizes:
            arrival = f"each {gap:g} s after the previous result"
            rows.append(
                single_case(api, instance, files[size], size, arrival, lambda g=gap: g, args.repeats, work, extra)
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=8, help="uploads of each single file, per case")
    parser.add_argument(
        "--independent", type=int, nargs="*", default=[1, 100, 1000], help="rows of the files uploaded independently"
    )
    parser.add_argument(
        "--rhythms",
        type=float,
        nargs="*",
        default=[0, 1, 3, 7],
        metavar="S",
        help="pauses between one upload's result and the next upload",
    )
    parser.add_argument(
        "--rhythm-sizes", type=int, nargs="*", default=[1, 100], help="rows of the files sent in rhythm"
    )
    parser.add_argument("--bursts", type=int, nargs="*", default=[30, 300])
    parser.add_argument(
        "--one-run-each",
        type=int,
        nargs="*",
        default=[30],
        metavar="N",
        help="bursts measured again with one run per upload (AIMQ_SCORING_UPLOADS_PER_RUN=1)",
    )
    parser.add_argument("--files-dir", type=Path, default=Path(tempfile.gettempdir()) / "aimq-batch-bench")
    parser.add_argument("--train-rows", type=int, default=20_000, help="rows per group to train on")
    parser.add_argument("--api-url", help="measure this running deployment instead of starting the platform here")
    parser.add_argument("--label", default="", help="results go to benchmarks/results/small_files_<label>.*")
    args = parser.parse_args()
    # From the environment, not an option: the command line is written into the results.
    if args.api_url and os.environ.get("AIMQ_API_KEY"):
        HEADERS["X-API-Key"] = os.environ["AIMQ_API_KEY"]

    args.files_dir.mkdir(parents=True, exist_ok=True)
    thousand = args.files_dir / "listings_1000.xlsx"
    if not thousand.exists():
        generate(thousand, 1000)
    files = {1: SAMPLES / "1_row.xlsx", 100: SAMPLES / "100_rows.xlsx", 1000: thousand}

    import pandas as pd

    probe_body = {
        k: (int(v) if isinstance(v, float) else v)
        for k, v in pd.read_excel(files[1], keep_default_na=False).to_dict("records")[0].items()
    }
    rows: list[list[Any]] = []
    extra: dict[str, Any] = {"single": {}, "bursts": {}}
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="aimq-small-bench-"))
    if args.api_url:
        try:
            measure(args.api_url.rstrip("/"), None, files, args, probe_body, work, extra, rows)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    else:
        measure_here(args, files, probe_body, work, extra, rows)
    write_report(args, rows, extra, load_before)


def measure(
    api: str,
    instance: Any,
    files: dict[int, Path],
    args: argparse.Namespace,
    probe_body: dict[str, Any],
    work: Path,
    extra: dict[str, Any],
    rows: list[list[Any]],
) -> None:
    """Singles and backlog bursts against one platform."""
    score_via_api(api, files[1], work / "warmup.xlsx", headers=HEADERS)  # a first run, as after a restart
    singles(api, instance, files, args, work, extra, rows)
    for n in args.bursts:
        rows.append(burst_row(api, instance, files[1], n, probe_body, work, extra, "backlog runs"))


def measure_here(
    args: argparse.Namespace,
    files: dict[int, Path],
    probe_body: dict[str, Any],
    work: Path,
    extra: dict[str, Any],
    rows: list[list[Any]],
) -> None:
    """The platform as `aimq up` runs it, started here under throw-away names, models trained."""
    tag = f"aimqbench-{uuid.uuid4().hex[:8]}"
    os.environ.update({**throwaway_env(tag, work), "AIMQ_RATE_LIMIT_ENABLED": "false"})

    import dagster as dg

    from aimq_pipelines.definitions import defs
    from aimq_pipelines.models.resources import ModelStoreResource, TrainingDataSource
    from aimq_serving.settings import AimqSettings

    settings = AimqSettings()
    print(f"training models ({args.train_rows} rows per group) ...", flush=True)
    with dg.DagsterInstance.ephemeral() as ephemeral:
        trained = defs.resolve_job_def("train_models").execute_in_process(
            instance=ephemeral,
            resources={
                "model_store": ModelStoreResource(),
                "training_source": TrainingDataSource(rows_per_group=args.train_rows),
            },
        )
        assert trained.success
    try:
        with Platform({**os.environ}, work) as platform, dg.DagsterInstance.get() as instance:
            measure(platform.api, instance, files, args, probe_body, work, extra, rows)
        if args.one_run_each:
            # The same bursts with every upload its own run: what backlog runs are measured against.
            alone = {**os.environ, "AIMQ_SCORING_UPLOADS_PER_RUN": "1"}
            with Platform(alone, work) as platform, dg.DagsterInstance.get() as instance:
                score_via_api(platform.api, files[1], work / "warmup.xlsx")
                for n in args.one_run_each:
                    rows.append(burst_row(platform.api, instance, files[1], n, probe_body, work, extra, "one run each"))
    finally:
        remove_throwaway(settings, work)


def write_report(args: argparse.Namespace, rows: list[list[Any]], extra: dict[str, Any], load_before: Any) -> None:
    load_after = os.getloadavg()
    extra["loadavg_before"], extra["loadavg_after"] = load_before, load_after
    notes = (
        "single: p50/p95 of upload -> `succeeded` (status `finished_at` minus the moment the upload was sent); "
        "independent = each upload after a pause of 5-10 s (an idle platform met at a random point of the sensor "
        "daemon's 5 s cycle); each N s after the previous result = the next upload sent N s after the previous one "
        "succeeded (0: back to back). 'where' is the median per stage and the load average (1 min) before-after "
        "the case, "
        + (
            "from the status record alone (no access to this deployment's Dagster instance): to op = broker confirm "
            "-> scoring op started, op = -> upload scored. "
            if args.api_url
            else "from Dagster's event timestamps: sensor = broker confirm -> run created, queue = -> launching "
            "(0 when launched at once), launch = -> run process started, op = -> upload scored (resources, scoring "
            "op, status write). "
        )
        + "burst: median/last upload `succeeded` after the burst began. "
        "demo = the original demo's way (one worker, per file: read, one /predict/onnx request per row, write), "
        "same files, same API, this run; ratio = demo time / AIMQ time (> 1: AIMQ faster).\n\n"
        f"Load average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f}, on {os.cpu_count()} cores "
        "shared with other work."
    )
    where = f"against {args.api_url} ({args.label or 'a running deployment'})" if args.api_url else "`aimq up`'s way"
    report.write(
        f"small_files_{args.label}" if args.label else "small_files",
        f"Many small files: upload to succeeded, {where}",
        "python -m benchmarks.small_files_benchmark " + " ".join(sys.argv[1:]),
        ["case", "p50 / median s", "p95 / last s", "where / checks", "demo way s", "ratio demo/AIMQ"],
        rows,
        extra=extra,
        notes=notes,
    )


if __name__ == "__main__":
    main()
