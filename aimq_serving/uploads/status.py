"""Upload status records in Redis.

Keys (prefix ``P`` from AIMQ_REDIS_PREFIX):

- ``P:uploads:<id>``     hash, one per upload (fields: see ``UploadRecord``)
- ``P:uploads:recent``   sorted set of upload ids, score = creation time (for ``GET /uploads``)

States: ``queued`` (stored and confirmed by the broker) -> ``running`` (a scoring run started)
-> ``succeeded`` | ``failed``. A rerun (Dagster UI re-execution, or a retry after a crash) goes
back to ``running``. Writers: the API registers an upload after the broker confirmed its message;
the sensor records the run id when it acknowledges the message; the run writes everything else;
the run-failure sensor marks uploads whose run died without doing so.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal

import redis
from pydantic import BaseModel

from aimq_serving.redis_errors import redis_available
from aimq_serving.uploads.messages import UploadMessage
from aimq_tabular.formats import Format

State = Literal["queued", "running", "succeeded", "failed"]
STATES: tuple[State, ...] = ("queued", "running", "succeeded", "failed")
_JSON_FIELDS = ("model_versions", "stats", "drift")
_INT_FIELDS = ("size", "rows_total", "rows_expected", "rows_done", "rows_rejected", "header_row")
_FLOAT_FIELDS = ("created_at", "started_at", "finished_at", "updated_at")


# Atomic check-and-set: the run-failure sensor reports about a run that may no longer be the
# upload's run (a rerun started since), or about an upload a rerun already finished.
_FAIL = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
if ARGV[1] ~= '' then
  if state == 'succeeded' or state == 'failed' then return 0 end
  local run = redis.call('HGET', KEYS[1], 'run_id')
  if run and run ~= ARGV[1] then return 0 end
end
redis.call('HSET', KEYS[1], 'state', 'failed', 'error', ARGV[2], 'finished_at', ARGV[3], 'updated_at', ARGV[3])
return 1
"""


class StatusUnavailable(Exception):
    """Redis could not be reached; transient."""


_available = partial(redis_available, StatusUnavailable, "upload status store")


class UploadRecord(BaseModel):
    upload_id: str
    state: State
    original_name: str
    format: Format
    size: int
    sha256: str
    created_at: float
    # All data rows of the file, once finished.
    rows_total: int | None = None
    # While running: the data rows the file declares (xlsx sheet dimension) or its line count (CSV),
    # taken when the run starts, for a progress percentage; an estimate, null when the file says nothing.
    rows_expected: int | None = None
    # Rows read so far while running.
    rows_done: int = 0
    rows_rejected: int = 0
    # Model version per model group used for this file's rows.
    model_versions: dict[str, int] = {}
    run_id: str | None = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float | None = None
    # Timings and peak memory of the run (seconds, MB), for operators and the benchmark.
    stats: dict[str, float] = {}
    # Where the table was found, once finished: the sheet (xlsx; null for CSV) and the header's row
    # as the sheet numbers it (CSV: its line); the rejected rows' numbers count the same way.
    data_sheet: str | None = None
    header_row: int | None = None
    # Once finished: the file's drift against the profiles of the versions that priced it (the JSON of
    # aimq_pipelines/monitoring/drift.py's DriftReport; docs/monitoring.md); null before, or when not asked.
    drift: dict[str, Any] | None = None


class UploadStatusStore:
    def __init__(self, client: redis.Redis, prefix: str):
        self.client = client
        self.prefix = prefix
        self._fail = client.register_script(_FAIL)

    @classmethod
    def from_settings(cls, settings: Any) -> UploadStatusStore:
        return cls(settings.redis_client(), settings.redis_prefix)

    def key(self, upload_id: str) -> str:
        return f"{self.prefix}:uploads:{upload_id}"

    @property
    def recent_key(self) -> str:
        return f"{self.prefix}:uploads:recent"

    # -- writes -----------------------------------------------------------------------------
    def register(self, message: UploadMessage) -> None:
        """Record a confirmed upload as queued, unless a run already moved it further."""
        key = self.key(message.upload_id)
        with _available():
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(key, mapping=_identity(message))
            # HSETNX: the run may have started (and written its state) before the API got here.
            pipe.hsetnx(key, "state", "queued")
            pipe.hsetnx(key, "updated_at", repr(time.time()))
            pipe.zadd(self.recent_key, {message.upload_id: message.created_at.timestamp()})
            pipe.execute()

    def attach_run(self, upload_id: str, run_id: str) -> None:
        """The sensor saw the upload's run: link it while the upload waits in Dagster's queue."""
        with _available():
            if self.client.exists(self.key(upload_id)):
                self.client.hsetnx(self.key(upload_id), "run_id", run_id)

    def start(self, message: UploadMessage, run_id: str) -> None:
        key = self.key(message.upload_id)
        now = repr(time.time())
        with _available():
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(key, mapping=_identity(message))
            pipe.hdel(key, "error", "finished_at", "rows_total", "rows_expected", "model_versions", "stats", "drift")
            pipe.hset(
                key,
                mapping={
                    "state": "running",
                    "run_id": run_id,
                    "started_at": now,
                    "updated_at": now,
                    "rows_done": 0,
                    "rows_rejected": 0,
                },
            )
            pipe.zadd(self.recent_key, {message.upload_id: message.created_at.timestamp()})
            pipe.execute()

    def expect(self, upload_id: str, rows_expected: int) -> None:
        with _available():
            self.client.hset(
                self.key(upload_id), mapping={"rows_expected": rows_expected, "updated_at": repr(time.time())}
            )

    def progress(self, upload_id: str, rows_done: int, rows_rejected: int) -> None:
        with _available():
            self.client.hset(
                self.key(upload_id),
                mapping={"rows_done": rows_done, "rows_rejected": rows_rejected, "updated_at": repr(time.time())},
            )

    def succeed(
        self,
        upload_id: str,
        *,
        rows_total: int,
        rows_rejected: int,
        model_versions: dict[str, int],
        stats: dict[str, float],
        data_sheet: str | None = None,
        header_row: int | None = None,
        drift: dict[str, Any] | None = None,
    ) -> None:
        now = repr(time.time())
        where: dict[str, Any] = {"header_row": header_row} if header_row is not None else {}
        if drift is not None:
            where["drift"] = json.dumps(drift, separators=(",", ":"))
        if data_sheet is not None:
            where["data_sheet"] = data_sheet
        with _available():
            pipe = self.client.pipeline(transaction=True)
            pipe.hdel(self.key(upload_id), "error")
            pipe.hset(
                self.key(upload_id),
                mapping={
                    "state": "succeeded",
                    "rows_total": rows_total,
                    "rows_done": rows_total,
                    "rows_rejected": rows_rejected,
                    "model_versions": json.dumps(model_versions, sort_keys=True),
                    "stats": json.dumps(stats, sort_keys=True),
                    "finished_at": now,
                    "updated_at": now,
                    **where,
                },
            )
            pipe.execute()

    def fail(self, upload_id: str, reason: str, *, run_id: str | None = None) -> bool:
        """Mark the upload failed. With ``run_id``, only if that run is still the upload's run and
        the upload is not finished (a late report about an old run must not undo a newer one)."""
        with _available():
            done = self._fail(keys=[self.key(upload_id)], args=[run_id or "", reason[:4000], repr(time.time())])
        return bool(done)

    # -- reads ------------------------------------------------------------------------------
    def get(self, upload_id: str) -> UploadRecord | None:
        with _available():
            raw = self.client.hgetall(self.key(upload_id))
        return _record(upload_id, raw)

    def recent(self, limit: int = 50, state: State | None = None) -> list[UploadRecord]:
        records: list[UploadRecord] = []
        start = 0
        # Reads past ``limit`` ids only when a state filter drops some; bounded by a few pages.
        with _available():
            while len(records) < limit and start < limit * 20:
                ids = [i.decode() for i in self.client.zrevrange(self.recent_key, start, start + limit - 1)]
                if not ids:
                    break
                pipe = self.client.pipeline(transaction=False)
                for upload_id in ids:
                    pipe.hgetall(self.key(upload_id))
                for upload_id, raw in zip(ids, pipe.execute()):
                    record = _record(upload_id, raw)
                    if record is not None and (state is None or record.state == state):
                        records.append(record)
                start += limit
        return records[:limit]

    def created_before(self, cutoff: float, limit: int, offset: int = 0) -> list[str]:
        """Ids of uploads created before ``cutoff`` (epoch seconds), oldest first: ``limit`` of them
        after the first ``offset``."""
        with _available():
            ids = self.client.zrangebyscore(self.recent_key, "-inf", f"({cutoff!r}", offset, limit)
        return [i.decode() for i in ids]

    def delete(self, upload_id: str) -> None:
        with _available():
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self.key(upload_id))
            pipe.zrem(self.recent_key, upload_id)
            pipe.execute()

    def clear(self) -> None:
        """Delete every upload record under the prefix (tests)."""
        with _available():
            for key in self.client.scan_iter(match=f"{self.prefix}:uploads:*", count=500):
                self.client.delete(key)


def _identity(message: UploadMessage) -> dict[str, Any]:
    return {
        "upload_id": message.upload_id,
        "original_name": message.original_name,
        "format": message.format,
        "size": message.size,
        "sha256": message.sha256,
        "created_at": repr(message.created_at.timestamp()),
    }


def _record(upload_id: str, raw: dict[bytes, bytes]) -> UploadRecord | None:
    if not raw or b"state" not in raw:
        return None
    data: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
    for name in _INT_FIELDS:
        if name in data:
            data[name] = int(data[name])
    for name in _FLOAT_FIELDS:
        if name in data:
            data[name] = float(data[name])
    for name in _JSON_FIELDS:
        if name in data:
            data[name] = json.loads(data[name])
    data["upload_id"] = upload_id
    return UploadRecord.model_validate(data)


def utc_now() -> datetime:
    return datetime.now(UTC)
