"""Configuration shared by the API, the pipelines and the CLI (env vars prefixed ``AIMQ_``)."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aimq_serving.conformal import MAX_COVERAGE, MIN_COVERAGE

if TYPE_CHECKING:
    import redis


class AimqSettings(BaseSettings):
    # Frozen: settings_with hands one object to every caller with the same environment.
    model_config = SettingsConfigDict(env_prefix="AIMQ_", env_file=None, extra="ignore", frozen=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    # Every model-store key lives under this prefix, so several deployments (or test runs) can share
    # one Redis without seeing each other.
    redis_prefix: str = "aimq"
    redis_timeout_s: float = Field(default=2.0, gt=0)

    data_dir: Path = Path.home() / ".aimq"
    # HMAC key for model artifacts. When unset, a random key is created once in data_dir and reused
    # by every local process, so there is never a well-known default key.
    signing_key: SecretStr | None = None

    keep_versions: int = Field(default=5, ge=1)

    # Model pipeline
    training_rows_per_group: int = Field(default=100_000, ge=100)
    # A folder holding A.csv, B.csv and C.csv (the sample files' columns plus the price) to train on
    # instead of the generated data set.
    training_csv_dir: Path | None = None
    retrain_cron: str = "0 3 * * *"
    # A new model version is served only if its holdout error (MAE) is at most this fraction above the
    # current version's on the same holdout rows (the champion_challenger check); 0 allows no worse at all.
    promotion_margin: float = Field(default=0.02, ge=0, le=1)
    # Retraining on drift (aimq_pipelines/monitoring/retrain.py): a group's chain is requested once this
    # many consecutive judged uploads of the group drifted, and at most once per cooldown (counted from
    # the group's last training run, whatever started it).
    retrain_drift_uploads: int = Field(default=3, ge=1, le=1000)
    retrain_cooldown_s: float = Field(default=6 * 3600.0, ge=0)
    # The drift_history asset of each group: how many recent scored uploads it summarizes, and how often
    # (at most) the monitoring sensor refreshes it while uploads arrive.
    drift_history_uploads: int = Field(default=50, ge=1, le=1000)
    drift_history_refresh_s: float = Field(default=300.0, ge=0)
    # Finished train_models runs kept per model group in Dagster's storage (with their event logs); older
    # ones are deleted by the purge_uploads job (aimq_pipelines/uploads/run_retention.py).
    training_runs_kept: int = Field(default=10, ge=1)

    # Online prediction API
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    max_batch_size: int = Field(default=1000, ge=1)
    # Bounds what one request can make the server buffer; a full batch of records is ~300 KB.
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Shared by all workers through Redis; per client key (the header below, else the client address).
    rate_limit_enabled: bool = True
    rate_limit_requests: int = Field(default=6000, ge=1)
    rate_limit_window_s: float = Field(default=60.0, gt=0)
    # e.g. "X-API-Key" when an authenticating gateway sets it; unset: the client IP (see --proxy-headers).
    # With API keys on, an authenticated request is limited per key name instead.
    rate_limit_key_header: str | None = None
    # API keys (aimq_serving/api/auth.py): off while neither is set. Entries "name:key" or "key",
    # separated by commas or newlines; the file form suits a mounted Kubernetes or compose secret.
    api_keys: SecretStr | None = None
    api_keys_file: Path | None = None
    # How often each worker looks whether api_keys_file changed (a rotated secret then takes effect
    # without a restart); 0 looks on every request.
    api_keys_file_check_s: float = Field(default=5.0, ge=0)
    # The coverage of the price ranges (price_low, price_high) online and in batch, unless a request
    # asks for another (?coverage=, within the same bounds): the share of true prices a range holds.
    coverage: float = Field(default=0.9, ge=MIN_COVERAGE, le=MAX_COVERAGE)
    # Where /predict/onnx executes: in-process ONNX Runtime, or RedisAI (needs the server's ai module).
    predict_backend: Literal["onnxruntime", "redisai"] = "onnxruntime"
    # per_request reloads the signed pickle from Redis on every request: the original demo's slow
    # baseline, for the benchmark only. Never use it to serve.
    pickle_mode: Literal["cached", "per_request"] = "cached"
    # Rows waiting for the one scikit-learn thread of a worker (/predict/pickle) before a request is
    # refused with 503: at ~20 us per queued row after ~2.5 ms per call (measured), 2000 rows keep a
    # request's wait well under a second. An idle queue always takes a request, of any batch size.
    pickle_queue_rows: int = Field(default=2000, ge=1)
    # uvicorn's access log (one line per request). Off by default in every deployment: it cost 11 %
    # of /predict/onnx throughput to /dev/null (issue 18); request metrics are at /metrics and
    # errors are logged. On: every request logged, whatever command line started the server.
    access_log: bool = False

    # Batch scoring: uploads -> RabbitMQ -> Dagster sensor -> one scoring run per upload
    rabbitmq_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/%2F")
    uploads_exchange: str = "aimq.uploads"
    uploads_queue: str = "aimq.uploads"
    uploads_dead_letter_exchange: str = "aimq.uploads.dlx"
    uploads_dead_letter_queue: str = "aimq.uploads.dlq"
    # Uploaded files and results; default: data_dir/uploads. Shared by the API and the run workers.
    upload_dir: Path | None = None
    max_upload_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    # Data rows per file; the default is what one Excel sheet holds below its header row.
    max_upload_rows: int = Field(default=1_048_575, ge=1)
    # How long the API waits for the broker to confirm a message before answering 503.
    broker_confirm_timeout_s: float = Field(default=5.0, gt=0)
    # An incoming body (incoming/<id>.part) not written to for this long belongs to a request the
    # API never answered with 202 (it died, or the client went silent): the sensor removes it.
    upload_abandoned_after_s: float = Field(default=3600.0, gt=0)
    # Finished uploads (their files and status record) are deleted this many days after they
    # finished, by the purge_uploads schedule (cron below); 0 keeps them forever.
    upload_retention_days: float = Field(default=30.0, ge=0)
    upload_retention_cron: str = "30 4 * * *"
    # The sensor takes at most this many messages per tick and stops taking them after the budget,
    # well inside Dagster's 60 s sensor evaluation timeout.
    sensor_batch_size: int = Field(default=50, ge=1, le=1000)
    sensor_tick_budget_s: float = Field(default=10.0, gt=0, le=45)
    # Dagster's sensor daemon starts a tick every 5 s at most, and sleeps only what is left of
    # 5 s after its loop: a tick on an empty queue waits up to this long for the first upload, so
    # an upload is picked up within ~0.1 s instead of at the next tick (docs/batch.md, "Measured").
    # Below 5 s: a tick also spends time around the wait (the gRPC call, connecting, submitting
    # its runs), and one still running when the daemon's next loop starts makes that loop skip the
    # sensor (measured with 4 s under a load average of 20+: a tick every 10 s). So this is the
    # ceiling: after a skipped loop ticks wait less, and creep back up (tick_pacing.py).
    sensor_wait_s: float = Field(default=4.0, ge=0, le=4.5)
    # Once a tick has an upload to request, it goes on taking messages while they keep coming,
    # until the queue has been empty this long: a burst becomes one tick's runs, not one per tick.
    # Every upload alone waits this long for its run: 0.1 s, not 0.3 s, since the upload sensors
    # take turns (sensor_shards): what comes after a tick returned is taken by the next sensor's
    # tick at once, not 5 s later.
    sensor_linger_s: float = Field(default=0.1, ge=0, le=2)
    # 1, not 5: the daemon's loop is the real limit, and a tick stamped a moment after the loop
    # started would otherwise make the next loop skip the sensor (10 s between ticks).
    sensor_interval_s: int = Field(default=1, ge=1)
    # Upload sensors (shards) reading the one queue. The daemon runs one tick at a time per sensor,
    # and a tick that took an upload returns to have its run created: one sensor leaves the queue
    # unwatched until the daemon's next loop (up to 5 s). With several, the others' ticks are still
    # open and take the next upload at once (docs/batch.md, "Many small files"). Each tick holds a
    # thread of the daemon's sensor pool and of the code server: `sensors: num_workers` in
    # dagster.yaml must exceed this by the other sensors (deploy/dagster/common.yaml). A sensor whose
    # tick took an upload is done until the next loop: 8, not 4, so that uploads sent back to back
    # (one every ~0.8 s, ~6 per loop) each find a tick open (with 4, the fifth of a loop waited for
    # the next: p95 2.4 s, benchmarks/results/small_files_quiet26.md).
    sensor_shards: int = Field(default=8, ge=1, le=16)
    # `aimq up` restarts the Dagster daemon once its resident memory passes this many MB (0: never).
    # Dagster's daemon grows by itself, steadily (dagster-io/dagster#32070; +0.9 MB a minute in the
    # soak benchmark, ~1.3 GB a day); it keeps no state of its own, so a restart loses nothing (the
    # fault tests kill it). Kubernetes does the same at the daemon's memory limit (k8s/base/daemon.yaml).
    daemon_max_rss_mb: int = Field(default=1024, ge=0)
    # Compose and Kubernetes: a scoring run whose uploads weigh at most this many bytes starts in the
    # warm code server (no container or pod: ~4 s less); larger ones, training and the purge in
    # run containers or Jobs (aimq_pipelines/run_launcher.py). 0: every run in a container.
    small_upload_bytes: int = Field(default=1024 * 1024, ge=0)
    # Uploads a tick finds waiting together are scored by backlog runs (score_uploads, one step
    # per upload) of at most this many: a run process start costs ~2 s of CPU, scoring a small
    # file ~0.1 s (docs/batch.md, "Many small files"). An upload alone gets a run of its own.
    scoring_uploads_per_run: int = Field(default=25, ge=1, le=200)
    # Drift of each upload against its model version's profile (docs/monitoring.md): the share of clean
    # files flagged at most (weighted Benjamini-Hochberg over every feature), the difference in a
    # cell's share below which nothing is drift however many rows show it, the fewest rows of a group
    # that are judged, and how much the features' importance weighs the tests (0: not at all).
    drift_alpha: float = Field(default=0.01, gt=0, lt=1)
    drift_margin: float = Field(default=0.01, gt=0, lt=1)
    drift_min_rows: int = Field(default=30, ge=1)
    drift_importance_weight: float = Field(default=0.5, ge=0, le=1)
    # Rows (of the listings' 12 columns; a wider sheet's parts hold as many cells) read, scored and
    # written per step of a scoring run: its memory follows the part, never the file. 50,000 and
    # not 100,000 (docs/batch.md, "Issue 27, second round"): a 1,000,000-row xlsx's run and its
    # parsers peaked at 709-730 MB instead of 970-992 MB, within the 1 GB bound with room, and took no
    # longer: a part costs a few ms more work, and the first and last parts' stages, which overlap
    # nothing, take half as long.
    scoring_chunk_rows: int = Field(default=50_000, ge=1000)
    # Processes a scoring run parses an xlsx's parts in (aimq_tabular/part_parsers.py; each holds
    # one part's parse, ~100-110 MB of its own at 50,000 rows of 12 columns).
    scoring_parsers: int = Field(default=2, ge=1, le=8)
    # Where people open the Dagster UI; upload statuses link their run there.
    dagster_ui_url: str = "http://127.0.0.1:3000"

    # Command line: where `aimq score` and `aimq predict` reach the API (--api-url overrides it).
    api_url: str = "http://127.0.0.1:8000"
    # The key they send when the API requires one (--api-key overrides it); AIMQ_API_KEYS is the server's list.
    api_key: SecretStr | None = None

    @model_validator(mode="after")
    def _redisai_needs_database_0(self) -> AimqSettings:
        # RedisAI executes models only in database 0: on another one AI.MODELSTORE answers OK and
        # every /predict/onnx then fails ("model key is empty"). Refused here, at start-up.
        if self.predict_backend == "redisai":
            from redis.connection import parse_url

            db = int(parse_url(self.redis_url).get("db", 0) or 0)
            if db != 0:
                raise ValueError(
                    f"AIMQ_PREDICT_BACKEND=redisai needs AIMQ_REDIS_URL on database 0 (RedisAI runs models "
                    f"only there), but it selects database {db}; keep deployments apart with AIMQ_REDIS_PREFIX"
                )
        return self

    @property
    def resolved_upload_dir(self) -> Path:
        return self.upload_dir if self.upload_dir is not None else self.data_dir / "uploads"

    def redis_client(self) -> redis.Redis:
        """A client whose every call fails within the configured timeout (Redis down -> a clear error)."""
        import redis

        return redis.Redis.from_url(
            self.redis_url,
            socket_timeout=self.redis_timeout_s,
            socket_connect_timeout=self.redis_timeout_s,
            health_check_interval=30,
        )

    def resolved_signing_key(self) -> bytes:
        if self.signing_key is not None:
            return self.signing_key.get_secret_value().encode()
        return _key_from_file(self.data_dir / "signing.key")


def _key_from_file(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    return path.read_bytes().strip()


@lru_cache(maxsize=1)
def get_settings() -> AimqSettings:
    return AimqSettings()


def settings_with(**overrides: str | int | float | bool) -> AimqSettings:
    """``AimqSettings(**overrides)``, built once per distinct AIMQ_* environment and overrides in this
    process. Building one reads and validates every field (~17 ms); the Dagster resources asked for
    theirs in each step, twice per upload of a backlog run (docs/batch.md, "Issue 26, fourth round").
    The environment is part of the key, so a changed AIMQ_* variable is read again."""
    environment = tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith("AIMQ_")))
    return _settings_for(tuple(sorted(overrides.items())), environment)


@lru_cache(maxsize=16)
def _settings_for(overrides: tuple[tuple[str, object], ...], environment: tuple[tuple[str, str], ...]) -> AimqSettings:
    del environment  # a key only: AimqSettings reads os.environ itself
    return AimqSettings(**dict(overrides))
