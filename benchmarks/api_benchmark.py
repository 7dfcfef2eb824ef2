"""The online prediction API against its own no-op endpoint, on a real uvicorn with 2 workers.

    .venv/bin/python -m benchmarks.api_benchmark [--rows 100000] [--requests 1000] [--rounds 5]
        [--duration 5] [--wrk-rounds 4] [--redisai-url redis://host:port/0]

1. The original demo's table: 1000 sequential requests with a keep-alive httpx client to POST /ping
   (the no-op: same middleware, same request body, no model), /predict/onnx, /predict/pickle (cached),
   /predict/pickle with the model loaded per request (the original demo's baseline), and the RedisAI
   path when --redisai-url names a server with the ai module.
2. Throughput and p50/p99 latency at concurrency 1, 8 and 64 with wrk, each endpoint next to the no-op,
   and the no-op on a second server with rate limiting off (what the shared limiter costs).

Needs wrk, a low-overhead C load generator: `apt-get install -y wrk` (Debian/Ubuntu).
Models are trained by the pipeline itself (the train_models job) into a throw-away key prefix, which
is deleted at the end. Runs are interleaved endpoint by endpoint and repeated, and the tables give
medians: the machine may be shared, so compare rows of one run (the ratios), not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pandas as pd
import redis

from aimq_pipelines.definitions import defs
from aimq_pipelines.resources import ModelStoreResource, TrainingDataSource
from benchmarks import report
from tests.serving.support import clear_prefix, uvicorn_server

SAMPLES = Path(os.environ.get("AIMQ_SAMPLES_DIR", Path(__file__).resolve().parents[1] / "samples"))
NOOP = "/ping"
UNLIMITED = "POST /ping (no-op, rate limit off)"
ORIGINAL = "the original demo on this machine with the same client: 5.3 s for /predict/onnx, 644 s for /predict/pickle"


def train(redis_url: str, prefix: str, rows: int, home: str) -> None:
    with dg.DagsterInstance.ephemeral(tempdir=home) as instance:
        result = defs.resolve_job_def("train_models").execute_in_process(
            instance=instance,
            resources={
                "io_manager": dg.FilesystemIOManager(base_dir=os.path.join(home, "storage")),
                "model_store": ModelStoreResource(redis_url=redis_url, prefix=prefix),
                "training_source": TrainingDataSource(rows_per_group=rows),
            },
        )
    if not result.success:
        raise SystemExit("training the models failed; see the log above")


def sample_bodies() -> list[bytes]:
    frame = pd.read_excel(SAMPLES / "100_rows.xlsx", keep_default_na=False)
    return [json.dumps(r).encode() for r in json.loads(frame.to_json(orient="records"))]


# -- sequential ------------------------------------------------------------------------------------
def sequential(url: str, paths: list[str], bodies: list[bytes], n: int, block: int = 50) -> dict[str, dict[str, float]]:
    """``n`` requests to each path over one keep-alive connection, interleaved in blocks of ``block``
    so that every path sees the same moments of a noisy machine."""
    headers = {"content-type": "application/json"}
    latencies: dict[str, list[float]] = {p: [] for p in paths}
    totals = dict.fromkeys(paths, 0.0)
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for path in paths:
            client.post(path, content=bodies[0]).raise_for_status()
        for start in range(0, n, block):
            for path in paths:
                block_start = time.perf_counter()
                for i in range(start, min(n, start + block)):
                    t = time.perf_counter()
                    response = client.post(path, content=bodies[i % len(bodies)])
                    latencies[path].append(time.perf_counter() - t)
                    if response.status_code != 200:
                        raise SystemExit(f"{path} answered {response.status_code}: {response.text}")
                totals[path] += time.perf_counter() - block_start
    return {p: {"total_s": totals[p], **percentiles(latencies[p])} for p in paths}


def percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {"p50_ms": ordered[len(ordered) // 2] * 1e3, "p99_ms": ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1e3}


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


# -- wrk -------------------------------------------------------------------------------------------
def wrk_script(path: str, bodies: list[bytes], directory: str) -> str:
    lua = ["local bodies = {"] + [f"  [==[{b.decode()}]==]," for b in bodies] + ["}"]
    lua += [
        "local i = 0",
        'wrk.headers["Content-Type"] = "application/json"',
        "request = function()",
        "  i = i % #bodies + 1",
        f'  return wrk.format("POST", "{path}", nil, bodies[i])',
        "end",
    ]
    script = Path(directory) / f"{path.strip('/').replace('/', '_') or 'root'}.lua"
    script.write_text("\n".join(lua) + "\n")
    return str(script)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk_ms(text: str) -> float:
    """A latency as wrk prints it (``812.00us``, ``1.20ms``, ``1.05s``), in ms."""
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def run_wrk(url: str, script: str, connections: int, duration_s: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", "-s", script, url],
        capture_output=True, text=True, check=True,
    ).stdout
    if "Non-2xx or 3xx responses" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw failed requests:\n{out}")
    percentiles = dict(re.findall(r"\b(50|99)%\s+([\d.]+(?:us|ms|s))\b", out))
    if set(percentiles) != {"50", "99"} or "Requests/sec" not in out:
        raise SystemExit(f"unexpected wrk output:\n{out}")
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": wrk_ms(percentiles["50"]),
        "p99_ms": wrk_ms(percentiles["99"]),
    }


# -- main ------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="training rows per model group (the pipeline's default)")
    parser.add_argument("--requests", type=int, default=1000, help="sequential requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the sequential table")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--wrk-rounds", type=int, default=4, help="interleaved rounds per concurrency level")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers (2 cores here)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--redisai-url", help="a Redis server with the RedisAI module, for the RedisAI row")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk   (Debian/Ubuntu; it is a C load generator)")

    prefix = f"aimqbench-api-{uuid.uuid4().hex[:8]}"
    env = {
        "AIMQ_REDIS_URL": args.redis_url, "AIMQ_REDIS_PREFIX": prefix, "AIMQ_SIGNING_KEY": secrets.token_hex(32),
        # Rate limiting stays on (it is part of every request's cost) with a limit no run reaches.
        "AIMQ_RATE_LIMIT_ENABLED": "true", "AIMQ_RATE_LIMIT_REQUESTS": str(10**9),
    }
    os.environ["AIMQ_SIGNING_KEY"] = env["AIMQ_SIGNING_KEY"]  # the training job signs with it
    bodies = sample_bodies()
    urls = [args.redis_url] + ([args.redisai_url] if args.redisai_url else [])
    load_before = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="aimq-apibench-") as home:
            os.environ["AIMQ_DATA_DIR"] = home
            for redis_url in urls:
                print(f"training the models (3 x {args.rows:,} rows) into {redis_url} {prefix} ...", flush=True)
                train(redis_url, prefix, args.rows, home)
            seq, conc = measure(args, env, bodies, home)
    finally:
        for redis_url in urls:
            client = redis.Redis.from_url(redis_url)
            clear_prefix(client, prefix)
            client.close()
    write_results(args, seq, conc, load_before)


def measure(args: argparse.Namespace, env: dict[str, str], bodies: list[bytes], home: str
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    seq: list[dict[str, Any]] = []
    conc: list[dict[str, Any]] = []
    labels = {NOOP: "POST /ping (no-op)", "/predict/onnx": "POST /predict/onnx (ONNX Runtime)",
              "/predict/pickle": "POST /predict/pickle (cached)"}
    paths = list(labels)
    with uvicorn_server(env, workers=args.workers) as url:
        print("sequential: no-op, onnx, pickle (cached), interleaved ...", flush=True)
        rounds = [sequential(url, paths, bodies, args.requests) for _ in range(args.rounds)]
        for path in paths:
            runs = [r[path] for r in rounds]
            ratios = [r[path]["total_s"] / r[NOOP]["total_s"] for r in rounds]
            seq.append({"endpoint": labels[path], "path": path, "rounds": len(runs), **median_run(runs),
                        "vs_noop": statistics.median(ratios)})

        # What the shared rate limiter costs: the no-op again on a server with the limit off.
        unlimited = {**env, "AIMQ_RATE_LIMIT_ENABLED": "false"}
        with uvicorn_server(unlimited, workers=args.workers) as unlimited_url:
            print("wrk at concurrency 1, 8, 64 ...", flush=True)
            scripts = {p: wrk_script(p, bodies, home) for p in paths}
            targets = [(NOOP, url), ("/predict/onnx", url), ("/predict/pickle", url), (UNLIMITED, unlimited_url)]
            for connections in (1, 8, 64):
                wrk_runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in targets}
                for round_ in range(args.wrk_rounds):
                    # Each round starts with a different endpoint, so no endpoint always runs first.
                    shift = round_ % len(targets)
                    for name, target in targets[shift:] + targets[:shift]:
                        script = scripts[NOOP if name == UNLIMITED else name]
                        run_wrk(target, script, connections, 1)  # warm-up
                        wrk_runs[name].append(run_wrk(target, script, connections, args.duration))
                for name, runs in wrk_runs.items():
                    ratios = [r["rps"] / n["rps"] for r, n in zip(runs, wrk_runs[NOOP])]
                    conc.append({"endpoint": labels.get(name, name), "path": name, "concurrency": connections,
                                 **median_run(runs), "vs_noop": statistics.median(ratios)})

    per_request = {**env, "AIMQ_PICKLE_MODE": "per_request"}
    with uvicorn_server(per_request, workers=args.workers) as url:
        print("sequential: pickle loaded per request (the original baseline), next to the no-op ...", flush=True)
        run = sequential(url, [NOOP, "/predict/pickle"], bodies, args.requests)
        seq.append({"endpoint": "POST /predict/pickle (per request, original baseline)", "path": "/predict/pickle",
                    "rounds": 1, **run["/predict/pickle"], "vs_noop": run["/predict/pickle"]["total_s"] / run[NOOP]["total_s"]})
    if args.redisai_url:
        redisai = {**env, "AIMQ_REDIS_URL": args.redisai_url, "AIMQ_PREDICT_BACKEND": "redisai"}
        with uvicorn_server(redisai, workers=args.workers) as url:
            print("sequential: RedisAI, next to the no-op ...", flush=True)
            rounds = [sequential(url, [NOOP, "/predict/onnx"], bodies, args.requests) for _ in range(args.rounds)]
            runs = [r["/predict/onnx"] for r in rounds]
            seq.append({"endpoint": "POST /predict/onnx (RedisAI)", "path": "/predict/onnx", "rounds": len(runs),
                        **median_run(runs),
                        "vs_noop": statistics.median(r["/predict/onnx"]["total_s"] / r[NOOP]["total_s"] for r in rounds)})
    return seq, conc


def write_results(args: argparse.Namespace, seq: list[dict[str, Any]], conc: list[dict[str, Any]],
                  load_before: tuple[float, float, float]) -> None:
    seq_rows = [
        [r["endpoint"], r["rounds"], round(r["total_s"], 3), round(r["p50_ms"], 3), round(r["p99_ms"], 3),
         f"{r['vs_noop']:.2f}x"]
        for r in seq
    ]
    conc_rows = [
        [r["endpoint"], r["concurrency"], round(r["rps"]), round(r["p50_ms"], 3), round(r["p99_ms"], 3),
         f"{r['vs_noop']:.0%}"]
        for r in conc
    ]
    command = "python -m benchmarks.api_benchmark " + " ".join(sys.argv[1:])
    load = f"load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after"
    common = {"settings": vars(args), "load_average_before": load_before, "load_average_after": os.getloadavg()}
    report.write(
        "api_sequential",
        f"{args.requests} sequential requests per endpoint (httpx, keep-alive), uvicorn --workers {args.workers}",
        command,
        ["endpoint", "rounds", "total s (median)", "p50 ms", "p99 ms", "vs no-op (median of rounds)"],
        seq_rows,
        extra={"results": seq, **common},
        notes="Every endpoint gets the same requests (the 100 sample rows in turn), interleaved in blocks of 50 "
        "on one connection; rate limiting, metrics and the body-size limit are on. The per-request pickle row "
        f"ran on its own server, next to its own no-op. Reference: {ORIGINAL}. Shared machine: {load}.",
    )
    report.write(
        "api_concurrency",
        f"Throughput and latency with wrk (-t1, {args.duration} s per run), uvicorn --workers {args.workers}",
        command,
        ["endpoint", "concurrency", "req/s (median)", "p50 ms", "p99 ms", "req/s vs no-op (median of rounds)"],
        conc_rows,
        extra={"results": conc, **common},
        notes=f"Endpoints alternate run by run; wrk, the server and everything else share the 2 cores; {load}.",
    )


if __name__ == "__main__":
    main()
