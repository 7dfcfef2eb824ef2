"""Load: 64 clients on /predict/onnx for 30 s while 20 files are uploaded and scored.

    .venv/bin/python -m benchmarks.load_test [--duration 30] [--connections 64] [--uploads 20]
        [--rows 2000] [--workers 2] [--rate-limit 1000000 --rate-window 60]

Runs the platform as processes (the API under uvicorn with --workers, dagster-daemon launching run
processes, RabbitMQ, Redis) with a throw-away Redis prefix, queue names, DAGSTER_HOME and upload
folder, over models trained by the pipeline, with API keys on: the load generator sends one key,
the uploads another, and the shared rate limit counts them apart (by default high enough that the
table measures predictions, not 429s; with a low --rate-limit the load gets the documented 429s while
the uploads go through, which is what tests/e2e/test_load.py checks).
Pass: every prediction answered 200 or 429 (no other status, no
socket error, no timeout), every upload answered 202 (or 429/503 and went through on a retry after
Retry-After) and was scored exactly once, every status poll answered within 10 s, and the API stopped
cleanly (a stuck worker does not). Needs wrk (`apt-get install -y wrk`).

tests/e2e/test_load.py runs the same two loads against the test session's platform.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks import report
from benchmarks.api_benchmark import sample_bodies, train, wrk_ms
from benchmarks.stack import remove_throwaway, throwaway_env

_WRK_SCRIPT = """
local bodies = {%(bodies)s}
local i = 0
counts = {}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = [==[%(key)s]==]
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", "%(path)s", nil, bodies[i])
end
response = function(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end
local threads = {}
setup = function(thread) table.insert(threads, thread) end
done = function(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("counts")) do io.write(string.format("STATUS %%d %%d\\n", status, n)) end
  end
end
"""


@dataclass
class PredictLoad:
    """What wrk saw: requests by status, socket errors, throughput and latency."""

    duration_s: float
    connections: int
    statuses: dict[int, int]
    socket_errors: dict[str, int]
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def unexpected(self) -> dict[int, int]:
        return {s: n for s, n in self.statuses.items() if s not in (200, 429)}


def predict_load(
    api_url: str,
    bodies: list[bytes],
    api_key: str,
    *,
    duration_s: int,
    connections: int,
    path: str = "/predict/onnx",
    work_dir: Path,
) -> PredictLoad:
    lua = _WRK_SCRIPT % {
        "bodies": ",".join(f"[==[{b.decode()}]==]" for b in bodies),
        "key": api_key,
        "path": path,
    }
    script = work_dir / "load.lua"
    script.write_text(lua)
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration_s}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            api_url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration_s + 60,
    ).stdout
    latency = dict(re.findall(r"\b(50|90|99)%\s+([\d.]+(?:us|ms|s))\b", out))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if set(latency) != {"50", "90", "99"} or rps is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return PredictLoad(
        duration_s=duration_s,
        connections=connections,
        statuses={int(s): int(n) for s, n in re.findall(r"^STATUS (\d+) (\d+)$", out, re.M)},
        socket_errors=dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups()))) if errors else {},
        rps=float(rps.group(1)),
        p50_ms=wrk_ms(latency["50"]),
        p90_ms=wrk_ms(latency["90"]),
        p99_ms=wrk_ms(latency["99"]),
    )


@dataclass
class UploadOutcome:
    name: str
    answers: list[int] = field(default_factory=list)  # HTTP status of every attempt, in order
    upload_id: str | None = None
    record: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # from the first byte sent to the final state
    # Status polls that got no answer within POLL_TIMEOUT_S (a failure; the poll is repeated on a new
    # connection so the rest of the run is still measured).
    stalled_polls: int = 0


POLL_TIMEOUT_S = 10.0


def upload_burst(
    api_url: str, files: list[tuple[str, bytes]], api_key: str, *, timeout_s: float = 600, max_attempts: int = 8
) -> list[UploadOutcome]:
    """Upload every file at once (one thread each) the way a client should: a 429 or 503 is retried
    after its Retry-After; then poll each upload's status until it is finished."""
    headers = {"X-API-Key": api_key}
    start = threading.Barrier(len(files))

    def one(item: tuple[str, bytes]) -> UploadOutcome:
        name, content = item
        outcome = UploadOutcome(name)
        with httpx.Client(base_url=api_url, headers=headers, timeout=60) as client:
            start.wait()
            t0 = time.monotonic()
            for _ in range(max_attempts):
                response = client.post("/upload", files={"file": (name, content)})
                outcome.answers.append(response.status_code)
                if response.status_code == 202:
                    outcome.upload_id = response.json()["upload_id"]
                    break
                if response.status_code not in (429, 503):
                    return outcome
                time.sleep(min(float(response.headers.get("retry-after", "1")), 15.0))
            if outcome.upload_id is None:
                return outcome
            deadline = t0 + timeout_s
            while time.monotonic() < deadline:
                try:
                    response = client.get(f"/uploads/{outcome.upload_id}", timeout=POLL_TIMEOUT_S)
                except httpx.TimeoutException:
                    outcome.stalled_polls += 1
                    continue
                if response.status_code == 200 and response.json()["state"] in ("succeeded", "failed"):
                    outcome.record = response.json()
                    break
                time.sleep(float(response.headers.get("retry-after", "0.5")) if response.status_code == 429 else 0.5)
            outcome.seconds = time.monotonic() - t0
        return outcome

    with ThreadPoolExecutor(max_workers=len(files)) as pool:
        return list(pool.map(one, files))


def upload_files(count: int, rows: int) -> list[tuple[str, bytes]]:
    """``count`` CSV files of ``rows`` generated listings each (all groups), every file different."""
    import pandas as pd

    from aimq_pipelines.models.synthetic import generate_listings
    from aimq_serving import schema

    files = []
    for i in range(count):
        per_group = [rows // 3 + (1 if g < rows % 3 else 0) for g in range(3)]
        frame = pd.concat([generate_listings(g, n, seed=100 + i) for g, n in zip(schema.MODEL_GROUPS, per_group)])
        files.append((f"load_{i:02d}.csv", frame[list(schema.INPUT_COLUMNS)].to_csv(index=False).encode()))
    return files


def summarize(load: PredictLoad, uploads: list[UploadOutcome]) -> dict[str, Any]:
    finished = [u for u in uploads if u.record]
    return {
        "predict": {
            "connections": load.connections,
            "duration_s": load.duration_s,
            "requests": load.requests,
            "ok": load.statuses.get(200, 0),
            "rate_limited": load.statuses.get(429, 0),
            "unexpected_statuses": load.unexpected,
            "socket_errors": load.socket_errors,
            "rps": load.rps,
            "p50_ms": load.p50_ms,
            "p90_ms": load.p90_ms,
            "p99_ms": load.p99_ms,
        },
        "uploads": {
            "files": len(uploads),
            "accepted": sum(u.upload_id is not None for u in uploads),
            "retried": sum(len(u.answers) > 1 for u in uploads),
            "answers": sorted({s for u in uploads for s in u.answers}),
            "succeeded": sum(u.record.get("state") == "succeeded" for u in finished),
            "stalled_polls": sum(u.stalled_polls for u in uploads),
            "rows_scored": sum(u.record.get("rows_total", 0) - u.record.get("rows_rejected", 0) for u in finished),
            "p50_upload_to_result_s": statistics.median(u.seconds for u in finished) if finished else None,
            "max_upload_to_result_s": max((u.seconds for u in finished), default=None),
        },
    }


def run_both(
    api_url: str,
    bodies: list[bytes],
    files: list[tuple[str, bytes]],
    *,
    load_key: str,
    upload_key: str,
    duration_s: int,
    connections: int,
    work_dir: Path,
) -> tuple[PredictLoad, list[UploadOutcome]]:
    """The prediction load and the upload burst at the same time; the burst starts 2 s into the load."""
    outcome: dict[str, Any] = {}

    def burst() -> None:
        time.sleep(2)
        try:
            outcome["uploads"] = upload_burst(api_url, files, upload_key)
        except BaseException as exc:  # raised again in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=burst)
    thread.start()
    load = predict_load(api_url, bodies, load_key, duration_s=duration_s, connections=connections, work_dir=work_dir)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return load, outcome["uploads"]


# -- the benchmark: its own platform ---------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--rows", type=int, default=2000, help="rows per uploaded file")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    parser.add_argument("--rate-limit", type=int, default=1_000_000, help="requests per key per window")
    parser.add_argument("--rate-window", type=float, default=60.0, help="seconds")
    parser.add_argument("--train-rows", type=int, default=100_000)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk: apt-get install -y wrk")

    from tests.helpers.api_server import uvicorn_server
    from tests.helpers.platform import BIN, make_platform

    tag = f"aimqload-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="aimq-load-"))
    load_key, upload_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    env = {
        **throwaway_env(tag, work),
        "AIMQ_SENSOR_INTERVAL_S": "1",
        "AIMQ_API_KEYS": f"load:{load_key},uploads:{upload_key}",
        "AIMQ_RATE_LIMIT_REQUESTS": str(args.rate_limit),
        "AIMQ_RATE_LIMIT_WINDOW_S": str(args.rate_window),
    }
    os.environ.update(env)
    from aimq_serving.settings import AimqSettings

    settings = AimqSettings()
    print(f"training models ({args.train_rows:,} rows per group) ...", flush=True)
    train(settings.redis_url, tag, args.train_rows, str(work / "train"))
    files = upload_files(args.uploads, args.rows)
    platform = make_platform(settings, {"DAGSTER_HOME": env["DAGSTER_HOME"]}, work / "logs")
    load_before = os.getloadavg()
    try:
        platform.start("dagster-daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"])
        with uvicorn_server(platform.env, workers=args.workers) as url:
            print(
                f"{args.connections} clients on /predict/onnx for {args.duration} s, {args.uploads} uploads ...",
                flush=True,
            )
            load, uploads = run_both(
                url,
                sample_bodies(),
                files,
                load_key=load_key,
                upload_key=upload_key,
                duration_s=args.duration,
                connections=args.connections,
                work_dir=work,
            )
    finally:
        platform.stop()
        remove_throwaway(settings, work)

    summary = summarize(load, uploads)
    p, u = summary["predict"], summary["uploads"]
    failures = [f"{n} answered {s}" for s, n in p["unexpected_statuses"].items()]
    failures += [f"{k} socket errors: {n}" for k, n in p["socket_errors"].items() if n]
    failures += [
        f"upload {x.name}: answers {x.answers}, state {x.record.get('state')}"
        for x in uploads
        if x.record.get("state") != "succeeded"
    ]
    if u["stalled_polls"]:
        failures.append(f"{u['stalled_polls']} status polls unanswered within {POLL_TIMEOUT_S:g} s")
    command = "python -m benchmarks.load_test " + " ".join(sys.argv[1:])
    rows = [
        [
            f"POST /predict/onnx, {p['connections']} connections, {p['duration_s']} s",
            p["requests"],
            p["ok"],
            p["rate_limited"],
            sum(p["unexpected_statuses"].values()) + sum(p["socket_errors"].values()),
            round(p["rps"]),
            p["p50_ms"],
            p["p99_ms"],
        ],
        [
            f"POST /upload + scoring, {u['files']} files x {args.rows:,} rows at once",
            u["files"],
            u["succeeded"],
            sum(x.answers.count(429) for x in uploads),
            u["files"] - u["succeeded"],
            "-",
            round(u["p50_upload_to_result_s"] * 1e3) if u["p50_upload_to_result_s"] else "-",
            round(u["max_upload_to_result_s"] * 1e3) if u["max_upload_to_result_s"] else "-",
        ],
    ]
    notes = (
        f"uvicorn --workers {args.workers}; rate limit {args.rate_limit:,} requests per {args.rate_window:g} s per API "
        "key (the load and the uploads use different keys); upload rows: p50/p99 columns are the median and the "
        f"slowest upload-to-finished time in ms; status polls with no answer within {POLL_TIMEOUT_S:g} s: "
        f"{u['stalled_polls']}. Load average "
        f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after. "
        + ("No errors." if not failures else "FAILURES: " + "; ".join(failures))
    )
    report.write(
        "load",
        "Load: predictions and uploads at once",
        command,
        ["load", "requests", "ok (200 / scored)", "429", "errors", "req/s", "p50 ms", "p99 ms"],
        rows,
        extra={"summary": summary},
        notes=notes,
    )
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
