"""The online prediction API against its own no-op endpoint, started as the deployments start it.

    .venv/bin/python -m benchmarks.api_benchmark [--rows 100000] [--requests 1000] [--rounds 5]
        [--duration 5] [--wrk-rounds 4] [--workers 2] [--redisai-url redis://host:port/0]
        [--baseline CHECKOUT] [--beside-dagster]

The server runs the command line of ``aimq up``, docker-compose.yml and k8s/base/api.yaml
(``uvicorn --factory aimq_serving.api.app:create_app``, plus ``--workers N``), with the settings'
defaults, so the access log is what users get (AIMQ_ACCESS_LOG, off). ``--baseline`` also serves
another checkout of the repository (e.g. ``git worktree add /tmp/before <commit>``) from this
environment and measures its no-op, /predict/onnx and /predict/pickle in the same interleaved
rounds: before and after as ratios of one run. ``--beside-dagster`` keeps a Dagster webserver and
daemon running for the whole measurement, as ``aimq up`` has them (own DAGSTER_HOME and queues).

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
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pandas as pd
import redis

from aimq_pipelines.definitions import defs
from aimq_pipelines.models.resources import ModelStoreResource, TrainingDataSource
from benchmarks import report
from tests.helpers.api_server import uvicorn_server
from tests.helpers.paths import REPO
from tests.helpers.redis_keys import clear_prefix

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


def store_for_baseline(redis_url: str, prefix: str, before_prefix: str) -> None:
    """Each group's current version again under ``before_prefix`` with only the artifacts every
    checkout signs (onnx, pickle, spec): a checkout from before a newer signed artifact (issue 25's
    calibration and reference) refuses a version that carries one, since its signature covers it.
    The same model bytes, so --baseline prices with the same trees."""
    from aimq_serving import schema
    from aimq_serving.model_store import ModelStore
    from aimq_serving.settings import AimqSettings

    source = ModelStore.from_settings(AimqSettings(redis_url=redis_url, redis_prefix=prefix))
    target = ModelStore.from_settings(AimqSettings(redis_url=redis_url, redis_prefix=before_prefix))
    for group in schema.MODEL_GROUPS:
        stored = source.get(group)
        target.promote(group, target.put(group, stored.onnx, stored.load_sklearn(), stored.spec, {}, {}))


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


def sequential_targets(
    targets: list[tuple[str, str, str, str, str]], bodies: list[bytes], n: int
) -> dict[str, dict[str, float]]:
    """``sequential`` per server, the servers one after the other; results by target name."""
    out: dict[str, dict[str, float]] = {}
    servers = dict.fromkeys(t[1] for t in targets)
    for server in servers:
        mine = [t for t in targets if t[1] == server]
        results = sequential(server, [t[2] for t in mine], bodies, n)
        out.update({name: results[path] for name, _, path, _, _ in mine})
    return out


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
    """One wrk run. A wrong status or a broken connection stops the benchmark; a request still
    unanswered after 10 s (wrk's timeout) is counted, not fatal: on an overloaded machine that is
    the result to report."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--timeout", "10s", "--latency", "-s", script, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if "Non-2xx or 3xx responses" in out or (errors and any(int(n) for n in errors.groups()[:3])):
        raise SystemExit(f"wrk saw failed requests at {url} ({script}):\n{out}")
    percentiles = dict(re.findall(r"\b(50|99)%\s+([\d.]+(?:us|ms|s))\b", out))
    if set(percentiles) != {"50", "99"} or "Requests/sec" not in out:
        raise SystemExit(f"unexpected wrk output:\n{out}")
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": wrk_ms(percentiles["50"]),
        "p99_ms": wrk_ms(percentiles["99"]),
        "timeouts": int(errors.group(4)) if errors else 0,
    }


# -- main ------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--rows", type=int, default=100_000, help="training rows per model group (the pipeline's default)"
    )
    parser.add_argument("--requests", type=int, default=1000, help="sequential requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the sequential table")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--wrk-rounds", type=int, default=4, help="interleaved rounds per concurrency level")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers (2 cores here)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--redisai-url", help="a Redis server with the RedisAI module, for the RedisAI row")
    parser.add_argument("--baseline", type=Path, help="another checkout to measure in the same rounds (before/after)")
    parser.add_argument(
        "--beside-dagster",
        action="store_true",
        help="run a Dagster webserver and daemon during the measurement, as `aimq up` does",
    )
    args = parser.parse_args()
    if args.baseline is not None and not (args.baseline / "aimq_serving" / "api" / "app.py").is_file():
        raise SystemExit(f"--baseline {args.baseline}: not a checkout of this repository")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk   (Debian/Ubuntu; it is a C load generator)")

    prefix = f"aimqbench-api-{uuid.uuid4().hex[:8]}"
    env = {
        "AIMQ_REDIS_URL": args.redis_url,
        "AIMQ_REDIS_PREFIX": prefix,
        "AIMQ_SIGNING_KEY": secrets.token_hex(32),
        # Rate limiting stays on (it is part of every request's cost) with a limit no run reaches.
        "AIMQ_RATE_LIMIT_ENABLED": "true",
        "AIMQ_RATE_LIMIT_REQUESTS": str(10**9),
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
                if args.baseline is not None:
                    store_for_baseline(redis_url, prefix, f"{prefix}-before")
            dagster = beside_dagster(env, prefix, home) if args.beside_dagster else contextlib.nullcontext()
            with dagster:
                seq, conc = measure(args, env, bodies, home)
    finally:
        for redis_url in urls:
            client = redis.Redis.from_url(redis_url)
            clear_prefix(client, prefix)
            clear_prefix(client, f"{prefix}-before")
            client.close()
    write_results(args, seq, conc, load_before)


BEFORE = " (before: --baseline)"


@contextlib.contextmanager
def beside_dagster(env: dict[str, str], prefix: str, home: str) -> Iterator[None]:
    """A Dagster webserver and daemon as ``aimq up`` starts them (the same commands), on the
    benchmark's prefix, a DAGSTER_HOME and RabbitMQ queues of their own; stopped and removed after."""
    from aimq_cli.instance import DAGSTER_YAML
    from aimq_serving.settings import AimqSettings
    from aimq_serving.uploads.broker import Topology, connect
    from tests.helpers.ports import free_port

    dagster_home = Path(home) / "dagster_home"
    dagster_home.mkdir()
    shutil.copyfile(DAGSTER_YAML, dagster_home / "dagster.yaml")
    names = {
        "AIMQ_UPLOADS_EXCHANGE": prefix,
        "AIMQ_UPLOADS_QUEUE": prefix,
        "AIMQ_UPLOADS_DEAD_LETTER_EXCHANGE": f"{prefix}.dlx",
        "AIMQ_UPLOADS_DEAD_LETTER_QUEUE": f"{prefix}.dlq",
    }
    full_env = {**os.environ, **env, **names, "DAGSTER_HOME": str(dagster_home), "AIMQ_DATA_DIR": home}
    bin_dir = Path(sys.executable).parent
    module = ["-m", "aimq_pipelines.definitions"]
    port = free_port()
    commands = [
        [str(bin_dir / "dagster-webserver"), *module, "-h", "127.0.0.1", "-p", str(port)],
        [str(bin_dir / "dagster-daemon"), "run", *module],
    ]
    log = open(Path(home) / "dagster.log", "wb")
    procs = [
        subprocess.Popen(c, env=full_env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        for c in commands
    ]
    try:
        deadline = time.monotonic() + 180
        while True:
            if any(p.poll() is not None for p in procs):
                raise SystemExit(f"Dagster exited while starting; see {log.name}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the Dagster webserver did not answer within 180 s")
            time.sleep(1)
        print(f"Dagster webserver (port {port}) and daemon running beside the API", flush=True)
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        settings = AimqSettings(**{k[len("AIMQ_") :].lower(): v for k, v in names.items()})
        connection = connect(settings.rabbitmq_url.get_secret_value())
        try:
            Topology.from_settings(settings).delete(connection.channel())
        finally:
            connection.close()


def measure(
    args: argparse.Namespace, env: dict[str, str], bodies: list[bytes], home: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    seq: list[dict[str, Any]] = []
    conc: list[dict[str, Any]] = []
    labels = {
        NOOP: "POST /ping (no-op)",
        "/predict/onnx": "POST /predict/onnx (ONNX Runtime)",
        "/predict/pickle": "POST /predict/pickle (cached)",
    }
    paths = list(labels)
    with contextlib.ExitStack() as servers:
        url = servers.enter_context(uvicorn_server(env, workers=args.workers, deployed=True))
        # (name, url, path, label, the no-op it is compared with)
        targets = [(p, url, p, labels[p], NOOP) for p in paths]
        if args.baseline is not None:
            before_url = servers.enter_context(
                uvicorn_server(
                    {**env, "AIMQ_REDIS_PREFIX": f"{env['AIMQ_REDIS_PREFIX']}-before"},
                    workers=args.workers,
                    deployed=True,
                    cwd=args.baseline,
                )
            )
            targets += [(p + BEFORE, before_url, p, labels[p] + BEFORE, NOOP + BEFORE) for p in paths]
        print("sequential: no-op, onnx, pickle (cached), interleaved ...", flush=True)
        rounds = [sequential_targets(targets, bodies, args.requests) for _ in range(args.rounds)]
        for name, _, path, label, noop in targets:
            runs = [r[name] for r in rounds]
            ratios = [r[name]["total_s"] / r[noop]["total_s"] for r in rounds]
            seq.append(
                {
                    "endpoint": label,
                    "path": path,
                    "rounds": len(runs),
                    **median_run(runs),
                    "vs_noop": statistics.median(ratios),
                }
            )

        # What the shared rate limiter costs: the no-op again on a server with the limit off.
        unlimited = {**env, "AIMQ_RATE_LIMIT_ENABLED": "false"}
        unlimited_url = servers.enter_context(uvicorn_server(unlimited, workers=args.workers, deployed=True))
        targets.append((UNLIMITED, unlimited_url, NOOP, UNLIMITED, NOOP))
        print("wrk at concurrency 1, 8, 64 ...", flush=True)
        scripts = {p: wrk_script(p, bodies, home) for p in paths}
        for connections in (1, 8, 64):
            wrk_runs: dict[str, list[dict[str, float]]] = {t[0]: [] for t in targets}
            for round_ in range(args.wrk_rounds):
                # Each round starts with a different endpoint, so no endpoint always runs first.
                shift = round_ % len(targets)
                for name, target, path, _, _ in targets[shift:] + targets[:shift]:
                    run_wrk(target, scripts[path], connections, 1)  # warm-up
                    wrk_runs[name].append(run_wrk(target, scripts[path], connections, args.duration))
            for name, _, path, label, noop in targets:
                runs = wrk_runs[name]
                ratios = [r["rps"] / n["rps"] for r, n in zip(runs, wrk_runs[noop])]
                conc.append(
                    {
                        "endpoint": label,
                        "path": path,
                        "concurrency": connections,
                        **median_run(runs),
                        "vs_noop": statistics.median(ratios),
                        "timeouts": sum(r["timeouts"] for r in runs),
                    }
                )

    per_request = {**env, "AIMQ_PICKLE_MODE": "per_request"}
    with uvicorn_server(per_request, workers=args.workers, deployed=True) as url:
        print("sequential: pickle loaded per request (the original baseline), next to the no-op ...", flush=True)
        run = sequential(url, [NOOP, "/predict/pickle"], bodies, args.requests)
        seq.append(
            {
                "endpoint": "POST /predict/pickle (per request, original baseline)",
                "path": "/predict/pickle",
                "rounds": 1,
                **run["/predict/pickle"],
                "vs_noop": run["/predict/pickle"]["total_s"] / run[NOOP]["total_s"],
            }
        )
    if args.redisai_url:
        redisai = {**env, "AIMQ_REDIS_URL": args.redisai_url, "AIMQ_PREDICT_BACKEND": "redisai"}
        with uvicorn_server(redisai, workers=args.workers, deployed=True) as url:
            print("sequential: RedisAI, next to the no-op ...", flush=True)
            rounds = [sequential(url, [NOOP, "/predict/onnx"], bodies, args.requests) for _ in range(args.rounds)]
            runs = [r["/predict/onnx"] for r in rounds]
            seq.append(
                {
                    "endpoint": "POST /predict/onnx (RedisAI)",
                    "path": "/predict/onnx",
                    "rounds": len(runs),
                    **median_run(runs),
                    "vs_noop": statistics.median(r["/predict/onnx"]["total_s"] / r[NOOP]["total_s"] for r in rounds),
                }
            )
    return seq, conc


def write_results(
    args: argparse.Namespace,
    seq: list[dict[str, Any]],
    conc: list[dict[str, Any]],
    load_before: tuple[float, float, float],
) -> None:
    seq_rows = [
        [
            r["endpoint"],
            r["rounds"],
            round(r["total_s"], 3),
            round(r["p50_ms"], 3),
            round(r["p99_ms"], 3),
            f"{r['vs_noop']:.2f}x",
        ]
        for r in seq
    ]
    conc_rows = [
        [
            r["endpoint"],
            r["concurrency"],
            round(r["rps"]),
            round(r["p50_ms"], 3),
            round(r["p99_ms"], 3),
            f"{r['vs_noop']:.0%}",
            r["timeouts"],
        ]
        for r in conc
    ]
    command = "python -m benchmarks.api_benchmark " + " ".join(sys.argv[1:])
    load = f"load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after"
    common = {"settings": vars(args), "load_average_before": load_before, "load_average_after": os.getloadavg()}
    server = (
        f"`uvicorn --factory aimq_serving.api.app:create_app --workers {args.workers}` (the deployments' command line)"
    )
    suffix = ""
    if args.beside_dagster:
        server += ", beside a Dagster webserver and daemon"
        suffix = "_beside_dagster"  # kept next to the plain run's files, not over them
    if args.baseline is not None:
        load += f"; rows marked 'before' served the checkout {args.baseline} from the same environment"
    report.write(
        "api_sequential" + suffix,
        f"{args.requests} sequential requests per endpoint (httpx, keep-alive), {server}",
        command,
        ["endpoint", "rounds", "total s (median)", "p50 ms", "p99 ms", "vs no-op (median of rounds)"],
        seq_rows,
        extra={"results": seq, **common},
        notes="Every endpoint gets the same requests (the 100 sample rows in turn), interleaved in blocks of 50 "
        "on one connection; rate limiting, metrics and the body-size limit are on, the access log off (the default). "
        "The per-request pickle row "
        f"ran on its own server, next to its own no-op. Reference: {ORIGINAL}. Shared machine: {load}.",
    )
    report.write(
        "api_concurrency" + suffix,
        f"Throughput and latency with wrk (-t1, {args.duration} s per run), {server}",
        command,
        [
            "endpoint",
            "concurrency",
            "req/s (median)",
            "p50 ms",
            "p99 ms",
            "req/s vs no-op (median of rounds)",
            "requests over 10 s (all rounds)",
        ],
        conc_rows,
        extra={"results": conc, **common},
        notes=f"Endpoints alternate run by run; wrk, the server and everything else share the 2 cores; {load}.",
    )


if __name__ == "__main__":
    main()
