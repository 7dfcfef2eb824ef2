"""Soak: `aimq up` under mixed traffic for 30 minutes; does anything grow, slow down or get lost?

    .venv/bin/python -m benchmarks.soak_benchmark [--minutes 30] [--sample-s 30] [--upload-every-s 1]
        [--predict-per-s 4] [--retrain-cron '*/10 * * * *'] [--retention-days 0.002]

The platform is the real ``aimq up`` command, run as a subprocess (not the services started one by one
as the other benchmarks do): what is measured is what a user runs, the supervisor, the code server
with its forkserver, the webserver, the daemon and the API, configured only through the environment
(its own DAGSTER_HOME and data folder, Redis key prefix, queue names and free ports). Its Redis is a
private Redis 6.2.14 (the deployed line, ``tests.helpers.deployed_redis``) so that ``used_memory`` is
the platform's alone; RabbitMQ is the machine's, under queue names of its own. Everything is removed
afterwards.

Traffic, all to 127.0.0.1, every loop bounded by the clock and a count:
- an upload about every ``--upload-every-s``: 1 to 10,000-row CSV and xlsx files, and one in ten a bad
  file (a workbook missing columns and a prose file named .csv: failed with the reason; a PNG named
  .xlsx: refused with 415; a CSV with a bad value: scored, that row rejected with its reason);
- ``/predict/onnx`` and ``/predict/pickle`` alternately at a fixed ``--predict-per-s`` (modest: the
  point is the latency of a platform doing its other work, not the API's capacity);
- a retrain by the platform's own ``retrain_models`` schedule (``AIMQ_RETRAIN_CRON``);
- retention short enough that the ``purge_uploads`` schedule (every minute) deletes uploads, their
  runs and old training runs many times over (``AIMQ_UPLOAD_RETENTION_DAYS``, a float).

Every ``--sample-s``: each service's RSS, open file descriptors and threads (its process tree without
the run processes, which come and go with the uploads: those are counted apart), Redis ``used_memory``
and the keys under the prefix (SCAN), the Dagster instance's files and bytes by folder (history: runs
and event logs; schedules: ticks; storage: compute logs and step outputs) and its run count by job, the
upload folder, and the API's latency in the window.

Goals (``judge``), over a run of D minutes (D = 30: the issue's minutes in brackets):
- RSS: between the end of the warm-up (D/3, minute 10) and the end, no service's RSS grows more than
  10 %: the median of the samples in the first D/15 (2 minutes) after the warm-up against the median
  of the last D/15. Medians of a few samples, because one sample can meet a garbage collection or a
  large upload in flight.
- Counts (fds, threads, keys, runs, bytes on disk): not growing at the end. The least-squares slope of
  the second half of the post-warm-up window (minutes 20-30), extrapolated over the whole window
  (20 minutes), must stay within 10 % of the window's starting level (or a small absolute floor per
  kind, the noise of one run in flight), by more than two standard errors of the slope (a count that
  swings with the files in flight is not growing, the slope of one that grows is many times its
  error). The second half, because a count that rose early and then
  levelled off is bounded, and one still rising at the end is not; extrapolated over the window, so
  it reads as "grows this much more in another 20 minutes", on the scale of the RSS goal.
- Latency: the API's p99 over the last D/6 (minutes 25-30) within 1.2x the p99 of D/6 to D/3
  (minutes 5-10).
- Uploads: every accepted upload finished exactly once: succeeded with the rows its file has (and
  exactly the bad rows rejected), or failed with its file's reason; one scoring run requested for it
  (retries of a crashed run aside), the one its status names. Refused ones answered their status.
  None lost (still unfinished after the drain, or gone before it was seen finished). Checked again
  at the end: no second run requested for it since.
- Retention, at the end (``stored_at_end``): the purge ran several times and never failed; nothing
  left that it should have removed (status records and runs of uploads overdue for deletion, purge
  runs older than the retention, files of deleted runs); no more training runs than kept.

tests/e2e/test_soak.py runs the same soak for 3 minutes with lighter traffic and asserts on it.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import psutil
import redis

from aimq_cli import local_platform
from aimq_cli.instance import local_instance
from aimq_pipelines.models.jobs import train_models_job
from aimq_pipelines.uploads.jobs import SCORING_JOBS, runs_of_upload, uploads_of
from aimq_pipelines.uploads.purge import purge_uploads_job
from aimq_serving.settings import AimqSettings
from benchmarks import report
from benchmarks.batch_benchmark import generate
from benchmarks.stack import remove_throwaway, throwaway_env
from tests.helpers import corpus, deployed_redis
from tests.helpers.paths import REPO, SAMPLES

BIN = Path(sys.executable).parent
DAY_S = 86_400.0
# How `aimq up`'s children are told apart: a marker in each one's command line.
SERVICES = {
    "code-server": "aimq_pipelines.code_server",
    "dagster-webserver": "dagster-webserver",
    "dagster-daemon": "dagster-daemon",
    "api": "uvicorn",
}
# A run process is forked by the code server's forkserver (aimq_pipelines/code_server.py), so it has
# the forkserver's command line; the forkserver itself belongs to the code server.
FORKSERVER_MARK = "multiprocessing.forkserver"
RSS_GROWTH_MAX = 0.10
TREND_MAX = 0.10
P99_RATIO_MAX = 1.2
# The absolute growth a count may show over the window whatever its level: about what one or two
# runs in flight add (a run's connections and files in the code server's tree are not counted, but
# the daemon's and the API's are: a gRPC channel, a Redis and a broker connection each).
# A trend fails only when it exceeds the allowance by more than this many standard errors of the
# slope: a count that swings with what is in flight (the upload folder holds 1- to 10,000-row files,
# a few large ones at a time: +-30 % from sample to sample in the first soak) otherwise reads as growth
# from where its swings happen to fall, while a count that truly grows has a slope many times its
# standard error over 20 samples (Redis memory per retrain: 8.2 MB against the 2 MB allowed).
TREND_NOISE_SE = 2.0
# The most lag-1 autocorrelation the error of a slope is widened for (x3 at 0.8; a count that only
# rises has residuals near 0, so a higher r there would only hide growth).
AUTOCORRELATION_MAX = 0.8
TREND_FLOORS = {"fds": 16, "threads": 8, "keys": 20, "records": 20, "runs": 6, "files": 12, "bytes": 2_000_000}
# How long after an upload is due for deletion the purge may take to delete it: the purge runs every
# minute, waits for a run slot behind scoring runs, then takes a few seconds (stored_at_end).
PURGE_LAG_S = 120.0
# A run's id, as its files are named (the storage folder also holds assets' outputs, named by asset).
RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Polls of an upload's status: at most this often, and the status requests are cheap (one HGETALL).
POLL_S = 1.0


@dataclass(frozen=True)
class SoakConfig:
    minutes: float = 30.0
    sample_s: float = 30.0
    upload_every_s: float = 1.0
    predict_per_s: float = 4.0
    # Cron has minutes for its unit: the retrain every 10 minutes is the platform's own schedule.
    retrain_cron: str = "*/10 * * * *"
    retention_days: float = 0.002  # 173 s
    purge_cron: str = "* * * * *"
    training_runs_kept: int = 2
    # Model versions the store keeps per group (AIMQ_KEEP_VERSIONS, 5 by default): 2, so that within
    # 30 minutes the retrains (every 10) reach the cap and Redis's used_memory can be seen to level off.
    keep_versions: int = 2
    train_rows: int = 20_000
    # Weights of the file kinds; rows of the good files from 1 to 10,000.
    bad_file_share: float = 0.1
    max_rows: int = 10_000
    # After the soak, how long accepted uploads may take to finish before they count as lost.
    drain_s: float = 300.0
    start_timeout_s: float = 600.0
    seed: int = 28

    @property
    def duration_s(self) -> float:
        return self.minutes * 60

    @property
    def retention_s(self) -> float:
        return self.retention_days * DAY_S


# --- the files ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class UploadKind:
    name: str
    path: Path
    outcome: corpus.Outcome
    weight: float

    def expected(self) -> str:
        outcome = self.outcome
        if isinstance(outcome, corpus.Refused):
            return f"refused {outcome.status}"
        if isinstance(outcome, corpus.Failed):
            return "failed"
        return f"{outcome.rows_total} rows, {len(outcome.rejected)} rejected"


def _csv_listings(path: Path, rows: int, seed: int) -> Path:
    import pandas as pd

    from aimq_pipelines.models.synthetic import generate_listings
    from aimq_serving import schema

    per_group = [rows // 3 + (1 if g < rows % 3 else 0) for g in range(3)]
    frame = pd.concat([generate_listings(g, n, seed=seed) for g, n in zip(schema.MODEL_GROUPS, per_group) if n])
    frame[list(schema.INPUT_COLUMNS)].to_csv(path, index=False)
    return path


def upload_kinds(directory: Path, config: SoakConfig) -> list[UploadKind]:
    """The mix: small files most often, as people upload them; a 10,000-row one in twenty; bad files
    from the bad-upload corpus (tests/helpers/corpus.py), with the outcome each must get."""
    directory.mkdir(parents=True, exist_ok=True)
    big = directory / f"listings_{config.max_rows}.xlsx"
    if not big.exists():
        generate(big, config.max_rows)
    good = 1.0 - config.bad_file_share
    kinds = [
        UploadKind("1 row xlsx", SAMPLES / "1_row.xlsx", corpus.Scored(1), 0.35 * good),
        UploadKind("10 rows csv", _csv_listings(directory / "listings_10.csv", 10, 1), corpus.Scored(10), 0.2 * good),
        UploadKind("100 rows xlsx", SAMPLES / "100_rows.xlsx", corpus.Scored(100), 0.2 * good),
        UploadKind(
            "1,000 rows csv", _csv_listings(directory / "listings_1000.csv", 1000, 2), corpus.Scored(1000), 0.2 * good
        ),
        UploadKind(f"{config.max_rows:,} rows xlsx", big, corpus.Scored(config.max_rows), 0.05 * good),
    ]
    bad = {
        "missing-columns": "workbook missing columns",
        "prose-named-csv": "not a spreadsheet (prose .csv)",
        "png-named-xlsx": "not a spreadsheet (PNG .xlsx)",
        "csv-blank-lines-keep-row-numbers": "CSV with a bad value",
    }
    cases = {case.id: case for case in corpus.CASES}
    for case_id, name in bad.items():
        case = cases[case_id]
        kinds.append(UploadKind(name, case.write(directory), case.outcome, config.bad_file_share / len(bad)))
    return kinds


# --- the platform: `aimq up` ------------------------------------------------------------------------
@dataclass
class AimqUp:
    """`aimq up` as a user starts it, with a private Redis and names of its own."""

    config: SoakConfig
    work: Path
    env: dict[str, str] = field(default_factory=dict)
    api_url: str = ""
    dagster_url: str = ""
    proc: subprocess.Popen | None = None
    redis_dir: Path | None = None

    @property
    def home(self) -> Path:
        return Path(self.env["DAGSTER_HOME"])

    def settings(self) -> AimqSettings:
        # Init arguments, not os.environ: a test session's own AIMQ_* stay untouched.
        fields = AimqSettings.model_fields
        values = {k[5:].lower(): v for k, v in self.env.items() if k.startswith("AIMQ_") and k[5:].lower() in fields}
        return AimqSettings(**values)

    def start(self) -> None:
        # Beside the platform's folder, which the clean-up removes before Redis is stopped.
        self.redis_dir = self.work.with_name(f"{self.work.name}-redis")
        redis_url = deployed_redis.start(self.redis_dir)
        tag = f"aimqsoak-{uuid.uuid4().hex[:8]}"
        api_port, dagster_port = local_platform.free_port(), local_platform.free_port()
        self.api_url, self.dagster_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{dagster_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIMQ_")}
        self.env = {
            **env,
            **throwaway_env(tag, self.work),
            "AIMQ_REDIS_URL": redis_url,
            "AIMQ_TRAINING_ROWS_PER_GROUP": str(self.config.train_rows),
            "AIMQ_RETRAIN_CRON": self.config.retrain_cron,
            "AIMQ_UPLOAD_RETENTION_DAYS": repr(self.config.retention_days),
            "AIMQ_UPLOAD_RETENTION_CRON": self.config.purge_cron,
            "AIMQ_TRAINING_RUNS_KEPT": str(self.config.training_runs_kept),
            "AIMQ_KEEP_VERSIONS": str(self.config.keep_versions),
            # The traffic comes from one address: the soak measures the platform, not the limiter.
            "AIMQ_RATE_LIMIT_ENABLED": "false",
        }
        if os.environ.get("AIMQ_RABBITMQ_URL"):
            self.env["AIMQ_RABBITMQ_URL"] = os.environ["AIMQ_RABBITMQ_URL"]
        command = [
            str(BIN / "aimq"),
            "up",
            "--api-port",
            str(api_port),
            "--dagster-port",
            str(dagster_port),
            "--start-timeout",
            str(int(self.config.start_timeout_s)),
        ]
        with open(self.work / "aimq-up.log", "wb") as log:
            self.proc = subprocess.Popen(command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.config.start_timeout_s
        while not self._serving():
            if self.proc.poll() is not None:
                raise RuntimeError(f"aimq up exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"aimq up not serving within {self.config.start_timeout_s:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(1)

    def _serving(self) -> bool:
        try:
            return (
                httpx.get(f"{self.api_url}/ready", timeout=2).status_code == 200
                and httpx.get(f"{self.dagster_url}/server_info", timeout=2).status_code == 200
            )
        except httpx.TransportError:
            return False

    def log_tail(self, lines: int = 40) -> str:
        text = (self.work / "aimq-up.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, keep: bool = False) -> None:
        """SIGTERM, as Ctrl-C: `aimq up` stops its services within 20 s (README); killed after 60. Then
        the queues, Redis and (unless ``keep``) the folder go."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            # The queues and exchanges, the keys (gone with the private Redis anyway) and the folder.
            remove_throwaway(self.settings(), self.work, keep_folder=keep)
        finally:
            if self.redis_dir is not None:
                deployed_redis.stop(self.redis_dir)


# --- sampling -------------------------------------------------------------------------------------
@dataclass
class ProcStats:
    rss_mb: float = 0.0
    fds: int = 0
    threads: int = 0
    processes: int = 0

    def add(self, proc: psutil.Process) -> None:
        with proc.oneshot():
            self.rss_mb += proc.memory_info().rss / 1e6
            self.fds += proc.num_fds()
            self.threads += proc.num_threads()
        self.processes += 1


def _is_forkserver(proc: psutil.Process) -> bool:
    return any(FORKSERVER_MARK in part for part in proc.cmdline())


def service_stats(up: psutil.Process) -> tuple[dict[str, ProcStats], ProcStats]:
    """Each service's process tree without run processes, and the run processes (all services')."""
    stats = {name: ProcStats() for name in ("aimq-up", *SERVICES)}
    runs = ProcStats()

    def visit(proc: psutil.Process, service: str, in_run: bool) -> None:
        try:
            (runs if in_run else stats[service]).add(proc)
            forkserver = _is_forkserver(proc) and not in_run
            for child in proc.children():
                visit(child, service, in_run or forkserver)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass  # ended between the listing and the reading: a run that finished

    stats["aimq-up"].add(up)
    for child in up.children():
        try:
            command = " ".join(child.cmdline())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        # The watchdog (aimq_cli/supervise.py) is the supervisor's own.
        service = next((name for name, mark in SERVICES.items() if mark in command), "aimq-up")
        visit(child, service, False)
    return stats, runs


def _folder(path: Path) -> tuple[int, int]:
    """Bytes and files under ``path``."""
    size = files = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                size += (Path(root) / name).stat().st_size
                files += 1
            except FileNotFoundError:
                pass  # deleted while walking
    return size, files


@dataclass
class Sample:
    t_s: float
    load1: float
    services: dict[str, dict[str, float]]
    run_processes: dict[str, float]
    redis_used_memory_mb: float
    redis_keys: int
    upload_records: int
    runs: int
    runs_by_job: dict[str, int]
    dagster_files: dict[str, dict[str, int]]
    upload_folder_bytes: int
    uploads_sent: int
    uploads_finished: int
    predict: dict[str, float | int | None]


class Sampler:
    """Takes a ``Sample`` every ``sample_s`` until stopped (or the soak's time is up)."""

    def __init__(self, up: AimqUp, instance: Any, lock: threading.Lock, progress: Callable[[], tuple[int, int]]):
        self.up, self.instance, self.lock, self.progress = up, instance, lock, progress
        self.settings = up.settings()
        self.redis = redis.Redis.from_url(self.settings.redis_url, socket_timeout=10)
        self.supervisor = psutil.Process(up.proc.pid)
        self.purge_runs_seen: set[str] = set()
        self.training_runs_seen: set[str] = set()

    def take(self, t_s: float, predict: dict[str, float | int | None]) -> Sample:
        services, runs = service_stats(self.supervisor)
        prefix = self.settings.redis_prefix
        keys = sum(1 for _ in self.redis.scan_iter(match=f"{prefix}:*", count=1000))
        records = sum(1 for _ in self.redis.scan_iter(match=f"{prefix}:uploads:*", count=1000)) - self.redis.exists(
            f"{prefix}:uploads:recent"
        )
        with self.lock:
            total = self.instance.get_runs_count()
            by_job = {
                job: self.instance.get_runs_count(filters=dg.RunsFilter(job_name=job))
                for job in (*(j.name for j in SCORING_JOBS), train_models_job.name, purge_uploads_job.name)
            }
            # Every purge and training run ever seen (the purge deletes them: the count alone cannot say
            # how many there were).
            for job, seen in (
                (purge_uploads_job.name, self.purge_runs_seen),
                (train_models_job.name, self.training_runs_seen),
            ):
                seen.update(r.run_id for r in self.instance.get_runs(filters=dg.RunsFilter(job_name=job), limit=200))
        home = self.up.home
        dagster_files = {}
        # history: runs.db, the event logs (one SQLite file per run, and the index); schedules: ticks;
        # storage: compute logs (each step's stdout and stderr).
        for folder in ("history", "schedules", "storage"):
            size, files = _folder(home / folder)
            dagster_files[folder] = {"bytes": size, "files": files}
        upload_dir = self.settings.upload_dir or self.settings.data_dir / "uploads"
        upload_bytes, _ = _folder(upload_dir)
        sent, finished = self.progress()
        return Sample(
            t_s=round(t_s, 1),
            load1=os.getloadavg()[0],
            services={name: asdict(s) for name, s in services.items()},
            run_processes=asdict(runs),
            redis_used_memory_mb=self.redis.info("memory")["used_memory"] / 1e6,
            redis_keys=keys,
            upload_records=records,
            runs=total,
            runs_by_job=by_job,
            dagster_files=dagster_files,
            upload_folder_bytes=upload_bytes,
            uploads_sent=sent,
            uploads_finished=finished,
            predict=predict,
        )


# --- traffic ----------------------------------------------------------------------------------------
@dataclass
class UploadLog:
    kind: str
    sent_at: float
    answer: int = 0
    detail: str = ""
    upload_id: str | None = None
    record: dict[str, Any] = field(default_factory=dict)
    # Scoring runs requested for it (not retries of a crashed one), when it was seen finished.
    requested_runs: list[str] = field(default_factory=list)
    verdict: str = ""  # see UploadTraffic.verdict


class UploadTraffic:
    """Sends an upload every ``every_s`` (no catch-up burst when late), follows each accepted one to its
    final state and checks it against its file's expected outcome."""

    def __init__(self, up: AimqUp, kinds: list[UploadKind], config: SoakConfig, instance: Any, lock: threading.Lock):
        self.up, self.kinds, self.config, self.instance, self.lock = up, kinds, config, instance, lock
        self.by_name = {k.name: k for k in kinds}
        self.logs: list[UploadLog] = []
        self.pending: dict[str, UploadLog] = {}
        self.stop_sending = threading.Event()
        self.stop_polling = threading.Event()
        self.rng = random.Random(config.seed)

    def progress(self) -> tuple[int, int]:
        logs = list(self.logs)
        return len(logs), sum(1 for log in logs if log.record.get("state") in ("succeeded", "failed"))

    def send_loop(self, until: float) -> None:
        weights = [k.weight for k in self.kinds]
        started = time.monotonic()
        with httpx.Client(base_url=self.up.api_url, timeout=60) as client:
            for i in itertools.count():
                due = started + i * self.config.upload_every_s
                if due >= until or self.stop_sending.is_set():
                    return
                if due > time.monotonic():
                    self.stop_sending.wait(due - time.monotonic())
                elif time.monotonic() - due > self.config.upload_every_s:
                    continue  # late by a whole interval: skip it rather than burst
                kind = self.rng.choices(self.kinds, weights)[0]
                log = UploadLog(kind.name, time.time())
                try:
                    response = client.post("/upload", files={"file": (kind.path.name, kind.path.read_bytes())})
                    log.answer = response.status_code
                    if response.status_code == 202:
                        log.upload_id = response.json()["upload_id"]
                        self.pending[log.upload_id] = log
                    else:
                        log.detail = response.text[:300]
                except httpx.HTTPError as exc:
                    log.detail = f"{type(exc).__name__}: {exc}"
                self.logs.append(log)

    def poll_loop(self, until: float) -> None:
        """Until ``until`` or stopped, and while uploads are pending: each one's status every POLL_S."""
        with httpx.Client(base_url=self.up.api_url, timeout=30) as client:
            while time.monotonic() < until and not (self.stop_polling.is_set() and not self.pending):
                for upload_id, log in list(self.pending.items()):
                    try:
                        response = client.get(f"/uploads/{upload_id}")
                    except httpx.HTTPError:
                        continue  # asked again next round
                    if response.status_code == 404:
                        log.verdict = "lost: its status vanished before it was seen finished"
                        del self.pending[upload_id]
                    elif response.status_code == 200 and response.json()["state"] in ("succeeded", "failed"):
                        log.record = response.json()
                        with self.lock:
                            runs = runs_of_upload(self.instance, upload_id)
                        log.requested_runs = [r.run_id for r in runs if "dagster/parent_run_id" not in r.tags]
                        log.verdict = self.verdict(log)
                        del self.pending[upload_id]
                time.sleep(POLL_S)

    def verdict(self, log: UploadLog) -> str:
        """ "ok" or what is wrong: the outcome against the file's, and the runs requested for it."""
        outcome, record = self.by_name[log.kind].outcome, log.record
        if log.requested_runs != [record.get("run_id")]:
            runs, named = log.requested_runs, record.get("run_id")
            return f"scored {len(runs)} times: runs {runs}, status names {named}"
        if isinstance(outcome, corpus.Failed):
            if record["state"] != "failed" or outcome.reason not in (record.get("error") or ""):
                return f"expected failed with {outcome.reason!r}, got {record['state']}: {record.get('error')}"
            return "ok"
        assert isinstance(outcome, corpus.Scored)
        if record["state"] != "succeeded":
            return f"expected succeeded, got failed: {record.get('error')}"
        if (record.get("rows_total"), record.get("rows_rejected")) != (outcome.rows_total, len(outcome.rejected)):
            return (
                f"expected {outcome.rows_total} rows, {len(outcome.rejected)} rejected; "
                f"got {record.get('rows_total')}, {record.get('rows_rejected')}"
            )
        return "ok"

    def refused_verdict(self, log: UploadLog) -> str:
        outcome = self.by_name[log.kind].outcome
        if isinstance(outcome, corpus.Refused) and log.answer == outcome.status and outcome.detail in log.detail:
            return "ok"
        return f"answered {log.answer} {log.detail[:200]!r}"

    def recheck(self) -> None:
        """Once more at the end, for uploads whose runs are still stored: no second run since."""
        for log in self.logs:
            if log.upload_id is None or log.verdict != "ok":
                continue
            with self.lock:
                runs = runs_of_upload(self.instance, log.upload_id)
            requested = {r.run_id for r in runs if "dagster/parent_run_id" not in r.tags}
            if requested - set(log.requested_runs):
                log.verdict = f"scored again after it finished: runs {sorted(requested)}"


class PredictTraffic:
    """``/predict/onnx`` and ``/predict/pickle`` alternately at a fixed rate, one record each."""

    def __init__(self, api_url: str, per_s: float):
        self.api_url, self.per_s = api_url, per_s
        self.records = [_body(row) for row in corpus.sample_rows()]
        # (seconds since the soak began, endpoint, latency in s, HTTP status or 0 for no answer)
        self.calls: list[tuple[float, str, float, int]] = []
        self.stop = threading.Event()

    def loop(self, t0: float, until: float) -> None:
        with httpx.Client(base_url=self.api_url, timeout=30) as client:
            for i in itertools.count():
                due = t0 + i / self.per_s
                if due >= until or self.stop.is_set():
                    return
                if due > time.monotonic():
                    self.stop.wait(due - time.monotonic())
                elif time.monotonic() - due > 1.0:
                    continue  # a fixed rate: the calls of a stall are dropped, not sent at once after it
                path = "/predict/onnx" if i % 2 == 0 else "/predict/pickle"
                started = time.monotonic()
                try:
                    status = client.post(path, json=self.records[i % len(self.records)]).status_code
                except httpx.HTTPError:
                    status = 0
                self.calls.append((started - t0, path, time.monotonic() - started, status))

    def window(self, start_s: float, end_s: float) -> dict[str, float | int | None]:
        calls = [c for c in list(self.calls) if start_s <= c[0] < end_s]
        ok = sorted(c[2] for c in calls if c[3] == 200)
        return {
            "calls": len(calls),
            "errors": len(calls) - len(ok),
            "p50_ms": 1000 * percentile(ok, 0.50) if ok else None,
            "p99_ms": 1000 * percentile(ok, 0.99) if ok else None,
        }


def _body(row: list[Any]) -> dict[str, Any]:
    from aimq_serving import schema

    return {k: (int(v) if isinstance(v, float) and v.is_integer() else v) for k, v in zip(schema.INPUT_COLUMNS, row)}


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- the soak -----------------------------------------------------------------------------------------
@dataclass
class SoakResult:
    config: SoakConfig
    samples: list[Sample]
    uploads: list[UploadLog]
    predict: PredictTraffic
    purge_runs: int
    training_runs: int
    end: dict[str, Any]  # stored_at_end: what retention should have removed when the traffic stopped
    loadavg_before: tuple[float, float, float]
    loadavg_after: tuple[float, float, float]


@contextmanager
def _threads(*targets: Callable[[], None]) -> Iterator[list[threading.Thread]]:
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    try:
        yield threads
    finally:
        for thread in threads:
            thread.join()


def run_soak(
    config: SoakConfig, work: Path, on_sample: Callable[[Sample], None] | None = None, keep: bool = False
) -> SoakResult:
    """Start `aimq up`, send the traffic for ``config.minutes`` while sampling, drain, stop, clean up
    (``keep``: all but the platform's folder, with its logs and DAGSTER_HOME)."""
    loadavg_before = os.getloadavg()
    kinds = upload_kinds(work / "files", config)
    up = AimqUp(config, work / "platform")
    (work / "platform").mkdir(parents=True, exist_ok=True)
    try:
        print(f"starting aimq up (training {config.train_rows:,} rows per group first) ...", flush=True)
        up.start()
        lock = threading.Lock()
        with local_instance(up.home) as instance:
            uploads = UploadTraffic(up, kinds, config, instance, lock)
            predict = PredictTraffic(up.api_url, config.predict_per_s)
            sampler = Sampler(up, instance, lock, uploads.progress)
            samples: list[Sample] = []
            t0 = time.monotonic()
            end = t0 + config.duration_s
            print(f"soak: {config.minutes:g} min, a sample every {config.sample_s:g} s", flush=True)
            with _threads(
                lambda: uploads.send_loop(end),
                lambda: uploads.poll_loop(end + config.drain_s),
                lambda: predict.loop(t0, end),
            ):
                try:
                    for k in itertools.count():
                        due = t0 + k * config.sample_s
                        if due > end:
                            break
                        time.sleep(max(0.0, due - time.monotonic()))
                        if not up.alive():
                            raise RuntimeError(f"aimq up exited during the soak:\n{up.log_tail()}")
                        t = time.monotonic() - t0
                        sample = sampler.take(t, predict.window(max(0.0, t - config.sample_s), t))
                        samples.append(sample)
                        if on_sample is not None:
                            on_sample(sample)
                    end_state = stored_at_end(config, sampler, uploads, time.time())
                finally:
                    uploads.stop_sending.set()
                    predict.stop.set()
                    uploads.stop_polling.set()  # the poller drains what is pending, until end + drain_s
            for log in uploads.logs:
                if log.upload_id is None:
                    log.verdict = uploads.refused_verdict(log)
                elif log.upload_id in uploads.pending:
                    log.verdict = (
                        f"lost: still {log.record.get('state', 'unfinished')} {config.drain_s:g} s after the soak"
                    )
            uploads.recheck()
            return SoakResult(
                config=config,
                samples=samples,
                uploads=uploads.logs,
                predict=predict,
                purge_runs=len(sampler.purge_runs_seen),
                training_runs=len(sampler.training_runs_seen),
                end=end_state,
                loadavg_before=loadavg_before,
                loadavg_after=os.getloadavg(),
            )
    finally:
        up.stop(keep)


def stored_at_end(config: SoakConfig, sampler: Sampler, uploads: UploadTraffic, now: float) -> dict[str, Any]:
    """What Redis and Dagster still hold, when the traffic stops, that retention should have removed.

    An upload that finished more than ``retention_s + PURGE_LAG_S`` ago is overdue: the purge runs
    every minute and may wait for a slot behind scoring runs, then takes a few seconds. An overdue
    upload must have no status record; a scoring or purge run that finished that long ago, none of
    whose uploads is still kept, must be gone; train_models runs number at most the kept ones plus
    one (finished since the last purge, or running). And no run may leave files: an event-log file in
    history/runs or a folder in storage/ whose run is gone (checked twice, 5 s apart: the purge
    deletes a run, then its files).
    """
    cutoff = now - config.retention_s - PURGE_LAG_S
    finished = [log for log in list(uploads.logs) if log.upload_id and "finished_at" in log.record]
    overdue = {log.upload_id for log in finished if log.record["finished_at"] < cutoff}
    prefix = sampler.settings.redis_prefix
    records_left = sorted(u for u in overdue if sampler.redis.exists(f"{prefix}:uploads:{u}"))
    before = dg.RunsFilter(
        statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED],
        updated_before=datetime.datetime.fromtimestamp(cutoff, tz=datetime.UTC),
    )
    with sampler.lock:
        old = sampler.instance.get_runs(filters=before)
        training = sampler.instance.get_runs_count(filters=dg.RunsFilter(job_name=train_models_job.name))
        purge_failed = sampler.instance.get_runs_count(
            filters=dg.RunsFilter(job_name=purge_uploads_job.name, statuses=[dg.DagsterRunStatus.FAILURE])
        )
    scoring_names = {j.name for j in SCORING_JOBS}
    runs_left = sorted(
        f"{r.job_name} {r.run_id}"
        for r in old
        if r.job_name == purge_uploads_job.name
        or (r.job_name in scoring_names and uploads_of(r) and set(uploads_of(r)) <= overdue)
    )
    files_left = _files_without_run(sampler)
    if files_left:
        time.sleep(5)
        files_left = [f for f in _files_without_run(sampler) if f in files_left]
    return {
        "overdue_uploads": len(overdue),
        "overdue_upload_records_left": records_left,
        "overdue_runs_left": runs_left,
        "training_runs": training,
        "training_runs_allowed": config.training_runs_kept + 1,
        "purge_runs_failed": purge_failed,
        "run_files_left": files_left,
    }


def _files_without_run(sampler: Sampler) -> list[str]:
    home = sampler.up.home
    candidates = [(p.stem, f"history/runs/{p.name}") for p in (home / "history" / "runs").glob("*.db")]
    candidates += [(p.name, f"storage/{p.name}") for p in (home / "storage").iterdir() if p.is_dir()]
    with sampler.lock:
        return sorted(
            path
            for run_id, path in candidates
            if RUN_ID.fullmatch(run_id) and sampler.instance.get_run_by_id(run_id) is None and (home / path).exists()
        )


# --- judging ---------------------------------------------------------------------------------------------
@dataclass
class Goal:
    goal: str
    subject: str
    value: str
    limit: str
    passed: bool


def series(samples: list[Sample]) -> dict[str, tuple[str, list[float]]]:
    """Every count judged for growth: name -> (floor kind, values per sample)."""
    out: dict[str, tuple[str, list[float]]] = {}
    for name in ("aimq-up", *SERVICES):
        out[f"{name} fds"] = ("fds", [s.services[name]["fds"] for s in samples])
        out[f"{name} threads"] = ("threads", [s.services[name]["threads"] for s in samples])
    out["Redis keys under the prefix"] = ("keys", [s.redis_keys for s in samples])
    out["upload status records"] = ("records", [s.upload_records for s in samples])
    out["Redis used_memory MB"] = ("bytes", [s.redis_used_memory_mb * 1e6 for s in samples])
    out["Dagster runs"] = ("runs", [s.runs for s in samples])
    for folder, label in (("history", "runs + event logs"), ("schedules", "ticks"), ("storage", "compute logs")):
        out[f"DAGSTER_HOME/{folder} bytes ({label})"] = ("bytes", [s.dagster_files[folder]["bytes"] for s in samples])
    for folder in ("history", "storage"):
        out[f"DAGSTER_HOME/{folder} files"] = ("files", [s.dagster_files[folder]["files"] for s in samples])
    out["upload folder bytes"] = ("bytes", [s.upload_folder_bytes for s in samples])
    return out


def _slope(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope (per second) and its standard error (0 with fewer than three points)."""
    n = len(points)
    if n < 2:
        return 0.0, 0.0
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if not sxx:
        return 0.0, 0.0
    slope = sum((t - mx) * (v - my) for t, v in points) / sxx
    if n < 3:
        return slope, 0.0
    residuals = [v - my - slope * (t - mx) for t, v in points]
    variance = sum(r * r for r in residuals)
    error = (variance / (n - 2) / sxx) ** 0.5
    # Samples 30 s apart of a count that holds minutes of work (the upload folder keeps each upload
    # for the retention, ~3 min) are not independent: a swing lasts several samples, and the error
    # above assumes each sample is new. Widened by the residuals' lag-1 autocorrelation r, as for an
    # AR(1) series (effective samples n(1-r)/(1+r); Santer et al. 2000, J. Geophys. Res. 105 D6).
    r = sum(a * b for a, b in itertools.pairwise(residuals)) / variance if variance else 0.0
    r = min(max(r, 0.0), AUTOCORRELATION_MAX)
    return slope, error * ((1 + r) / (1 - r)) ** 0.5


def trend_growth(points: list[tuple[float, float]], span_s: float, allowed: float) -> tuple[float, float, bool]:
    """A count's least-squares trend over ``points`` (time in s, value), extrapolated over ``span_s``;
    its noise (``TREND_NOISE_SE`` standard errors, extrapolated the same way); and whether it grows:
    the trend exceeds ``allowed`` by more than its noise."""
    slope, error = _slope(points)
    projected, noise = slope * span_s, TREND_NOISE_SE * error * span_s
    return projected, noise, projected - noise > allowed


def judge(result: SoakResult) -> list[Goal]:
    config, samples = result.config, result.samples
    d = config.duration_s
    warm = d / 3
    edge = max(d / 15, 2 * config.sample_s)  # at least two samples in each median
    after = [s for s in samples if s.t_s >= warm]
    first = [s for s in after if s.t_s < warm + edge]
    last = [s for s in after if s.t_s >= d - edge]
    second_half = [s for s in after if s.t_s >= (warm + d) / 2]
    goals: list[Goal] = []
    minute = lambda seconds: f"{seconds / 60:.3g}"  # noqa: E731

    for name in ("aimq-up", *SERVICES):
        start = statistics.median(s.services[name]["rss_mb"] for s in first)
        stop = statistics.median(s.services[name]["rss_mb"] for s in last)
        growth = stop / start - 1
        goals.append(
            Goal(
                f"RSS min {minute(warm)}->{minute(d)}",
                name,
                f"{start:.0f} -> {stop:.0f} MB ({growth:+.1%})",
                f"<= {RSS_GROWTH_MAX:+.0%}",
                growth <= RSS_GROWTH_MAX,
            )
        )
    by_t = {id(s): s.t_s for s in samples}
    for name, (kind, values) in series(samples).items():
        value_of = dict(zip((id(s) for s in samples), values))
        level = statistics.median(value_of[id(s)] for s in first)
        allowed = max(TREND_MAX * level, TREND_FLOORS[kind])
        projected, noise, grows = trend_growth([(by_t[id(s)], value_of[id(s)]) for s in second_half], d - warm, allowed)
        scale, unit = (1e6, " MB") if kind == "bytes" else (1, "")
        goals.append(
            Goal(
                "no growth at the end",
                name,
                f"level {level / scale:,.1f}{unit}, trend {projected / scale:+,.1f}{unit} "
                f"(+-{noise / scale:,.1f}) per {minute(d - warm)} min",
                f"<= +{allowed / scale:,.1f}{unit} + noise",
                not grows,
            )
        )
    baseline = result.predict.window(d / 6, d / 3)
    final = result.predict.window(d - d / 6, d)
    if baseline["p99_ms"] and final["p99_ms"]:
        ratio = final["p99_ms"] / baseline["p99_ms"]
        goals.append(
            Goal(
                f"API p99, last {minute(d / 6)} min vs min {minute(d / 6)}-{minute(d / 3)}",
                "/predict/onnx + /predict/pickle",
                f"{final['p99_ms']:.1f} / {baseline['p99_ms']:.1f} ms = {ratio:.2f}x "
                f"({final['calls']} and {baseline['calls']} calls, {final['errors'] + baseline['errors']} errors)",
                f"<= {P99_RATIO_MAX}x, no errors",
                ratio <= P99_RATIO_MAX and not (final["errors"] or baseline["errors"]),
            )
        )
    else:
        goals.append(Goal("API p99", "predict", "no successful call in a window", "answers", False))
    tally = upload_tally(result.uploads)
    goals.append(
        Goal(
            "every upload scored exactly once or failed with its reason",
            "uploads",
            ", ".join(f"{k} {v}" for k, v in tally.items()),
            "lost 0, scored twice 0, wrong outcome 0",
            tally["lost"] == 0 and tally["scored twice"] == 0 and tally["wrong outcome"] == 0,
        )
    )
    goals.append(
        Goal(
            "the purge ran several times",
            "purge_uploads runs",
            str(result.purge_runs),
            f">= {max(2, int(d / 60 / 3))}",
            result.purge_runs >= max(2, int(d / 60 / 3)),
        )
    )
    end = result.end
    goals.append(
        Goal(
            "the purge succeeded",
            "purge_uploads runs failed (of those stored at the end)",
            str(end["purge_runs_failed"]),
            "0",
            end["purge_runs_failed"] == 0,
        )
    )
    for what, left in (
        ("status records of overdue uploads", end["overdue_upload_records_left"]),
        ("finished runs of overdue uploads, and purge runs", end["overdue_runs_left"]),
        ("run files (history/runs, storage) of deleted runs", end["run_files_left"]),
    ):
        goals.append(
            Goal(
                "stored at the end, within what retention allows",
                what,
                f"{len(left)} left ({end['overdue_uploads']} uploads overdue)"
                if left
                else f"none left ({end['overdue_uploads']} uploads overdue)",
                "none",
                not left,
            )
        )
    goals.append(
        Goal(
            "stored at the end, within what retention allows",
            "train_models runs",
            str(end["training_runs"]),
            f"<= {end['training_runs_allowed']}",
            end["training_runs"] <= end["training_runs_allowed"],
        )
    )
    return goals


def upload_tally(logs: list[UploadLog]) -> dict[str, int]:
    accepted = [log for log in logs if log.upload_id]
    return {
        "sent": len(logs),
        "accepted": len(accepted),
        "scored once": sum(1 for log in accepted if log.verdict == "ok" and log.record.get("state") == "succeeded"),
        "failed with its reason": sum(
            1 for log in accepted if log.verdict == "ok" and log.record.get("state") == "failed"
        ),
        "refused with its reason": sum(1 for log in logs if not log.upload_id and log.verdict == "ok"),
        "lost": sum(1 for log in logs if log.verdict.startswith("lost")),
        "scored twice": sum(1 for log in logs if log.verdict.startswith("scored")),
        "wrong outcome": sum(
            1 for log in logs if log.verdict not in ("ok", "") and not log.verdict.startswith(("lost", "scored"))
        ),
    }


# --- output ------------------------------------------------------------------------------------------------
SAMPLE_COLUMNS = [
    "min",
    "load",
    "RSS MB code/web/daemon/api",
    "fds",
    "threads",
    "runs in flight",
    "Redis keys",
    "upload records",
    "used_memory MB",
    "runs (score/train/purge)",
    "history MB",
    "ticks MB",
    "compute logs MB",
    "uploads MB",
    "sent/finished",
    "p50/p99 ms",
]


def sample_row(s: Sample) -> list[Any]:
    services = [s.services[n] for n in SERVICES]
    score = sum(s.runs_by_job[j.name] for j in SCORING_JOBS)
    p50, p99 = s.predict.get("p50_ms"), s.predict.get("p99_ms")
    return [
        round(s.t_s / 60, 1),
        round(s.load1, 1),
        "/".join(f"{x['rss_mb']:.0f}" for x in services),
        sum(int(s.services[n]["fds"]) for n in s.services),
        sum(int(s.services[n]["threads"]) for n in s.services),
        int(s.run_processes["processes"]),
        s.redis_keys,
        s.upload_records,
        round(s.redis_used_memory_mb, 1),
        f"{s.runs} ({score}/{s.runs_by_job[train_models_job.name]}/{s.runs_by_job[purge_uploads_job.name]})",
        round(s.dagster_files["history"]["bytes"] / 1e6, 2),
        round(s.dagster_files["schedules"]["bytes"] / 1e6, 2),
        round(s.dagster_files["storage"]["bytes"] / 1e6, 2),
        round(s.upload_folder_bytes / 1e6, 1),
        f"{s.uploads_sent}/{s.uploads_finished}",
        f"{p50:.1f}/{p99:.1f}" if p50 is not None and p99 is not None else "-",
    ]


def print_sample(sample: Sample) -> None:
    print("  " + " | ".join(f"{c}: {v}" for c, v in zip(SAMPLE_COLUMNS, sample_row(sample))), flush=True)


def write_report(result: SoakResult, goals: list[Goal], command: str) -> None:
    kinds = {}
    for log in result.uploads:
        kinds.setdefault(log.kind, 0)
        kinds[log.kind] += 1
    samples_table = report.markdown_table(SAMPLE_COLUMNS, [sample_row(s) for s in result.samples])
    config = result.config
    failing = [log for log in result.uploads if log.verdict not in ("ok", "")]
    notes = (
        f"Goals: {sum(g.passed for g in goals)} of {len(goals)} met.\n\n"
        f"Traffic: an upload every {config.upload_every_s:g} s ({', '.join(f'{k} {n}' for k, n in kinds.items())}); "
        f"/predict/onnx and /predict/pickle alternately, {config.predict_per_s:g} calls/s; retrain by the "
        f"retrain_models schedule `{config.retrain_cron}` ({result.training_runs} train_models runs seen); "
        f"retention {config.retention_days:g} days ({config.retention_s:.0f} s), purge `{config.purge_cron}` "
        f"({result.purge_runs} purge_uploads runs seen); AIMQ_TRAINING_RUNS_KEPT={config.training_runs_kept}; "
        f"AIMQ_KEEP_VERSIONS={config.keep_versions}; "
        f"models trained on {config.train_rows:,} rows per group.\n\n"
        f"Samples (every {config.sample_s:g} s; RSS per service is its process tree without run processes; "
        "fds and threads summed over all services; p50/p99 of the predict calls in the window):\n\n"
        f"{samples_table}\n\n"
        f"Load average (1/5/15 min) before {'/'.join(f'{x:.1f}' for x in result.loadavg_before)}, after "
        f"{'/'.join(f'{x:.1f}' for x in result.loadavg_after)}, on {os.cpu_count()} cores shared with other "
        "engineers' test runs: the machine was not quiet."
        + (
            "\n\nUploads not as expected:\n\n"
            + "\n".join(f"- {log.kind} {log.upload_id}: {log.verdict}" for log in failing)
            if failing
            else ""
        )
    )
    report.write(
        "soak",
        f"Soak: `aimq up` for {config.minutes:g} minutes under mixed traffic",
        command,
        ["goal", "subject", "measured", "limit", "met"],
        [[g.goal, g.subject, g.value, g.limit, "yes" if g.passed else "NO"] for g in goals],
        extra={
            "config": asdict(config),
            "goals": [asdict(g) for g in goals],
            "samples": [asdict(s) for s in result.samples],
            "uploads": upload_tally(result.uploads),
            "uploads_not_ok": [asdict(log) for log in failing],
            "end": result.end,
            "purge_runs_seen": result.purge_runs,
            "training_runs_seen": result.training_runs,
            "loadavg_before": result.loadavg_before,
            "loadavg_after": result.loadavg_after,
        },
        notes=notes,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = SoakConfig()
    parser.add_argument("--minutes", type=float, default=defaults.minutes)
    parser.add_argument("--sample-s", type=float, default=defaults.sample_s)
    parser.add_argument("--upload-every-s", type=float, default=defaults.upload_every_s)
    parser.add_argument("--predict-per-s", type=float, default=defaults.predict_per_s)
    parser.add_argument("--retrain-cron", default=defaults.retrain_cron)
    parser.add_argument("--retention-days", type=float, default=defaults.retention_days)
    parser.add_argument("--training-runs-kept", type=int, default=defaults.training_runs_kept)
    parser.add_argument("--keep-versions", type=int, default=defaults.keep_versions)
    parser.add_argument("--train-rows", type=int, default=defaults.train_rows)
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="keep the platform's logs and DAGSTER_HOME here (default: a temporary folder, removed)",
    )
    args = parser.parse_args()
    config = SoakConfig(
        minutes=args.minutes,
        sample_s=args.sample_s,
        upload_every_s=args.upload_every_s,
        predict_per_s=args.predict_per_s,
        retrain_cron=args.retrain_cron,
        retention_days=args.retention_days,
        training_runs_kept=args.training_runs_kept,
        keep_versions=args.keep_versions,
        train_rows=args.train_rows,
    )
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="aimq-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = run_soak(config, work, on_sample=print_sample, keep=args.work_dir is not None)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    goals = judge(result)
    write_report(result, goals, "python -m benchmarks.soak_benchmark " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
