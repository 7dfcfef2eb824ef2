"""The fault tests' platform (on private servers they kill and restart), how they catch it in the act,
and what they check after the dust settles: each upload scored once, nothing orphaned."""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import httpx
import pandas as pd

from aimq_pipelines.uploads.jobs import runs_of_upload
from aimq_serving import schema
from aimq_serving.settings import AimqSettings
from aimq_serving.uploads.broker import connect
from aimq_serving.uploads.status import UploadStatusStore
from tests.helpers.paths import SAMPLES
from tests.helpers.platform import Platform, wait_for_upload
from tests.helpers.servers import RabbitServer, RedisServer

# Incoming bodies idle this long are swept (test d); longer than any pause a live request makes here,
# and than a queued message takes to reach its run, which claims the body: 8 s was not, on 2 cores
# at load 25 (the sensor swept a queued body before its run started, and the upload was withdrawn).
ABANDONED_AFTER_S = 60


@dataclass
class FaultPlatform:
    """The platform of tests/faults, its settings and Dagster instance, and the servers it runs on."""

    platform: Platform
    settings: AimqSettings
    instance: dg.DagsterInstance
    redis: RedisServer
    rabbit: RabbitServer

    @property
    def api_url(self) -> str:
        return self.platform.api_url

    @property
    def upload_dir(self) -> Path:
        return self.settings.resolved_upload_dir


PARENT_RUN_TAG = "dagster/parent_run_id"
# Dagster's run-retry daemon (EventLogConsumerDaemon) looks for failed runs every 5 s by default.
RETRY_DAEMON_PASS_S = 5.0
SCORING_ALLOWANCE_S = 240.0
_PID = re.compile(r"Started process for run \(pid: (\d+)\)")


def wait_until(
    check: Callable[[], bool],
    what: str,
    timeout_s: float = 120.0,
    fp: FaultPlatform | None = None,
    interval_s: float = 0.2,
) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if fp is not None:
            fp.platform.check_alive()
        assert time.monotonic() < deadline, f"timed out ({timeout_s:.0f} s) waiting for {what}"
        time.sleep(interval_s)


def sample_frame(rows: int) -> pd.DataFrame:
    """``rows`` listings: the 100-row sample repeated."""
    base = pd.read_excel(SAMPLES / "100_rows.xlsx", keep_default_na=False)
    return pd.concat([base] * (rows // len(base) + 1), ignore_index=True).head(rows)


def csv_bytes(rows: int) -> bytes:
    return sample_frame(rows).to_csv(index=False).encode()


def upload_and_catch_mid_file(fp: FaultPlatform, name: str, rows: int) -> tuple[str, UploadStatusStore, str]:
    """Upload a CSV of ``rows`` rows; return (upload id, status store, run id) once its run has
    written its first block and not its last: the moment to break something."""
    response = httpx.post(f"{fp.api_url}/upload", files={"file": (name, csv_bytes(rows))}, timeout=60)
    assert response.status_code == 202, response.text
    upload_id = response.json()["upload_id"]
    status = status_store(fp)

    def mid_file() -> bool:
        record = status.get(upload_id)
        return record is not None and record.state == "running" and 0 < record.rows_done < rows

    wait_until(mid_file, "the run to be in the middle of the file", timeout_s=180, fp=fp, interval_s=0.02)
    record = status.get(upload_id)
    assert record is not None and record.run_id is not None
    return upload_id, status, record.run_id


def status_store(fp: FaultPlatform) -> UploadStatusStore:
    return UploadStatusStore.from_settings(fp.settings)


def runs_of(fp: FaultPlatform, upload_id: str) -> list[dg.DagsterRun]:
    return runs_of_upload(fp.instance, upload_id)


def run_pid(fp: FaultPlatform, run_id: str) -> int | None:
    """The pid of the run's worker process, from the engine event Dagster logs when it starts."""
    for record in fp.instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        found = _PID.search(record.message or "") or _PID.search(
            record.dagster_event.message if record.dagster_event and record.dagster_event.message else ""
        )
        if found:
            return int(found.group(1))
    return None


def stored_ids(fp: FaultPlatform) -> set[str]:
    """Uploads whose input is in place (``<id[:2]>/<id>/input.<fmt>``)."""
    return {p.parent.name for p in fp.upload_dir.glob("??/*/input.*")}


def incoming(fp: FaultPlatform) -> list[Path]:
    return sorted((fp.upload_dir / "incoming").glob("*.part"))


def temporary_files(fp: FaultPlatform, upload_id: str) -> list[Path]:
    folder = fp.upload_dir / upload_id[:2] / upload_id
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name == "work"]


def queue_depth(fp: FaultPlatform) -> int:
    connection = connect(fp.rabbit.url)
    try:
        method = connection.channel().queue_declare(fp.settings.uploads_queue, passive=True).method
        return method.message_count
    finally:
        connection.close()


def wait_queue_drained(fp: FaultPlatform, timeout_s: float = 90.0) -> None:
    wait_until(lambda: queue_depth(fp) == 0, "every message to be acknowledged", timeout_s, fp, interval_s=0.5)


def retry_wait_s(fp: FaultPlatform) -> float:
    """How long a crashed run's upload may take to be scored by its retry, from the shipped settings
    (dagster.yaml, docs/batch.md): the retry daemon's pass (every few seconds) and the dequeue, then
    the retry's start, which run monitoring allows ``start_timeout_seconds``, then the scoring
    (SCORING_ALLOWANCE_S, the bound the fault tests give a whole upload)."""
    start_timeout = fp.instance.get_settings("run_monitoring")["start_timeout_seconds"]
    return RETRY_DAEMON_PASS_S + start_timeout + SCORING_ALLOWANCE_S


def finished_run(fp: FaultPlatform, run_id: str, timeout_s: float = 60.0) -> dg.DagsterRun:
    """The upload is marked succeeded a moment before its run ends."""
    run: dg.DagsterRun | None = None

    def done() -> bool:
        nonlocal run
        run = fp.instance.get_run_by_id(run_id)
        return run is not None and run.is_finished

    wait_until(done, f"run {run_id} to finish", timeout_s, fp)
    assert run is not None
    return run


def result_rows(fp: FaultPlatform, upload_id: str) -> pd.DataFrame:
    """The downloaded result (the fault tests upload CSV)."""
    response = httpx.get(f"{fp.api_url}/uploads/{upload_id}/result", timeout=60)
    assert response.status_code == 200, response.text
    return pd.read_csv(io.BytesIO(response.content), keep_default_na=False, na_values=[""])


def assert_scored_once(fp: FaultPlatform, upload_id: str, rows: int, timeout_s: float = SCORING_ALLOWANCE_S) -> dict:
    """Succeeded, by exactly one successful run (which the status names), with a complete result."""
    record = wait_for_upload(fp.api_url, upload_id, timeout_s=timeout_s, platform=fp.platform)
    assert record["state"] == "succeeded", record
    assert record["rows_total"] == rows, record
    finished_run(fp, record["run_id"])
    runs = runs_of(fp, upload_id)
    requested = [r for r in runs if PARENT_RUN_TAG not in r.tags]
    assert len(requested) == 1, (upload_id, [(r.run_id, r.status, dict(r.tags)) for r in runs])
    scored = [r.run_id for r in runs if r.status == dg.DagsterRunStatus.SUCCESS]
    assert scored == [record["run_id"]], (upload_id, [(r.run_id, r.status) for r in runs])
    frame = result_rows(fp, upload_id)
    assert len(frame) == rows
    assert frame["predicted_price"].notna().all()
    assert set(frame["model_group"]) <= set(schema.MODEL_GROUPS)
    assert not temporary_files(fp, upload_id)
    return record


def withdrawn(fp: FaultPlatform, upload_id: str) -> bool:
    """A run for an upload no client holds an id of: no file, no status, nothing scored."""
    runs = runs_of(fp, upload_id)
    return (
        upload_id not in stored_ids(fp)
        and status_store(fp).get(upload_id) is None
        and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    )


def process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def cmdline(pid: int | None) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
