"""Batch scoring end to end: the API under uvicorn, dagster-daemon (launching real run processes),
RabbitMQ and Redis, all real. One daemon and API serve the whole session (tests/conftest.py)."""

from __future__ import annotations

import io
import os
import signal
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dagster as dg
import httpx
import pandas as pd
import pika
import pytest

from aimq_pipelines.uploads.jobs import runs_of_upload, uploads_of
from aimq_serving import schema
from aimq_serving.uploads.broker import ERROR_HEADER, connect
from tests.helpers.paths import SAMPLES
from tests.helpers.platform import Platform, finished_run, prediction_records, wait_for_upload

pytestmark = pytest.mark.slow


def upload(platform: Platform, name: str, content: bytes) -> str:
    response = httpx.post(f"{platform.api_url}/upload", files={"file": (name, content)}, timeout=30)
    assert response.status_code == 202, response.text
    return response.json()["upload_id"]


def api_prices(platform: Platform, records: list[dict[str, Any]]) -> list[float]:
    body = prediction_records(records)
    response = httpx.post(f"{platform.api_url}/predict/onnx", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return [item["predicted_price"] for item in response.json()]


def download(platform: Platform, upload_id: str, what: str = "result") -> bytes:
    response = httpx.get(f"{platform.api_url}/uploads/{upload_id}/{what}", timeout=30)
    assert response.status_code == 200, response.text
    return response.content


def test_xlsx_and_csv_score_like_the_api(platform: Platform, instance: dg.DagsterInstance) -> None:
    sample = (SAMPLES / "100_rows.xlsx").read_bytes()
    frame = pd.read_excel(io.BytesIO(sample), keep_default_na=False)
    xlsx_id = upload(platform, "100_rows.xlsx", sample)
    csv_id = upload(platform, "100_rows.csv", frame.to_csv(index=False).encode())

    for upload_id, fmt in ((xlsx_id, "xlsx"), (csv_id, "csv")):
        record = wait_for_upload(platform.api_url, upload_id, platform=platform)
        assert record["state"] == "succeeded", record
        assert (record["rows_total"], record["rows_done"], record["rows_rejected"]) == (100, 100, 0)
        assert set(record["model_versions"]) == set(schema.MODEL_GROUPS)
        assert record["run_url"] == f"{platform.dagster_url}/runs/{record['run_id']}"
        run = finished_run(instance, record["run_id"])
        assert run.status == dg.DagsterRunStatus.SUCCESS and upload_id in uploads_of(run)

        content = download(platform, upload_id)
        if fmt == "xlsx":
            scored = pd.read_excel(io.BytesIO(content), sheet_name="predictions", keep_default_na=False)
        else:
            scored = pd.read_csv(io.BytesIO(content), keep_default_na=False, na_values=[""])
        assert len(scored) == 100
        assert scored[list(schema.INPUT_COLUMNS)].astype(str).equals(frame.astype(str))
        expected = api_prices(platform, scored.to_dict("records"))
        assert scored["predicted_price"].tolist() == expected  # exactly /predict/onnx, row by row
        versions = record["model_versions"]
        assert scored["model_version"].tolist() == [versions[g] for g in scored["model_group"]]


def test_bad_rows_are_reported_and_a_corrupt_file_fails(platform: Platform) -> None:
    frame = pd.read_excel(SAMPLES / "100_rows.xlsx", keep_default_na=False).head(20).astype(object)
    frame.loc[3, "fuel_type"] = "Steam"
    frame.loc[7, "kilometers"] = "many"
    frame.loc[11, "model_group"] = "Z"
    mixed_id = upload(platform, "mixed.csv", frame.to_csv(index=False).encode())

    corrupt = io.BytesIO()
    with zipfile.ZipFile(SAMPLES / "100_rows.xlsx") as src, zipfile.ZipFile(corrupt, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.startswith("xl/worksheets/"):
                data = data[: len(data) // 2]  # the sheet's XML stops in the middle
            dst.writestr(item, data)
    corrupt_id = upload(platform, "corrupt.xlsx", corrupt.getvalue())

    mixed = wait_for_upload(platform.api_url, mixed_id, platform=platform)
    assert mixed["state"] == "succeeded" and (mixed["rows_total"], mixed["rows_rejected"]) == (20, 3)
    scored = pd.read_csv(io.BytesIO(download(platform, mixed_id)), keep_default_na=False, na_values=[""])
    bad = [3, 7, 11]
    assert scored.loc[bad, "predicted_price"].isna().all()
    good = scored.drop(index=bad)
    assert good["predicted_price"].tolist() == api_prices(platform, good.to_dict("records"))
    rejected = pd.read_csv(io.BytesIO(download(platform, mixed_id, "rejected")), keep_default_na=False, na_values=[""])
    assert rejected["row"].tolist() == [r + 2 for r in bad]  # as a spreadsheet numbers them
    assert "fuel_type: unknown value 'Steam'" in rejected.loc[0, "errors"]
    assert "kilometers: 'many' is not a number" in rejected.loc[1, "errors"]
    assert "model_group: unknown value 'Z' (allowed: A, B, C)" in rejected.loc[2, "errors"]

    failed = wait_for_upload(platform.api_url, corrupt_id, platform=platform)
    assert failed["state"] == "failed" and "damaged" in failed["error"], failed
    response = httpx.get(f"{platform.api_url}/uploads/{corrupt_id}/result", timeout=10)
    assert response.status_code == 409 and "damaged" in response.json()["detail"]


def test_invalid_message_lands_in_the_dead_letter_queue(platform: Platform) -> None:
    env = platform.env
    connection = connect(env["AIMQ_RABBITMQ_URL"])
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            env["AIMQ_UPLOADS_EXCHANGE"],
            env["AIMQ_UPLOADS_QUEUE"],
            b'{"upload_id": 42}',
            properties=pika.BasicProperties(delivery_mode=2, message_id="stranger"),
        )
        deadline = 120
        for _ in range(deadline * 2):
            platform.check_alive()
            method, properties, body = channel.basic_get(env["AIMQ_UPLOADS_DEAD_LETTER_QUEUE"], auto_ack=True)
            if method is not None:
                break
            connection.sleep(0.5)
        else:
            pytest.fail("the invalid message did not reach the dead-letter queue")
    finally:
        connection.close()
    assert body == b'{"upload_id": 42}' and properties.message_id == "stranger"
    assert "upload_id" in properties.headers[ERROR_HEADER] and "Field required" in properties.headers[ERROR_HEADER]


def kill_daemon(platform: Platform) -> int:
    """SIGKILL the daemon and the code server it evaluates sensors in and launches runs through,
    mid-whatever-they-do (``start_daemon`` starts both again).

    Run workers keep running, as they would on their own machines; returns the old code server's
    process group (the run workers are in it) so the test can clean up what is left of it."""
    daemon, server = platform.services["dagster-daemon"].proc, platform.services["code-server"].proc
    for proc in (daemon, server):
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    return server.pid


def queue_depth(platform: Platform) -> int:
    connection = connect(platform.env["AIMQ_RABBITMQ_URL"])
    try:
        return connection.channel().queue_declare(platform.env["AIMQ_UPLOADS_QUEUE"], passive=True).method.message_count
    finally:
        connection.close()


BURST = 30


def test_burst_with_the_daemon_killed_midway_scores_each_upload_once(
    platform: Platform, instance: dg.DagsterInstance
) -> None:
    xlsx = (SAMPLES / "1_row.xlsx").read_bytes()
    csv = pd.read_excel(SAMPLES / "100_rows.xlsx", keep_default_na=False).head(3).to_csv(index=False).encode()
    # Enough uploads that the kill lands while runs are being requested and others wait in the queue.
    files = [(f"burst-{i}.xlsx", xlsx) if i % 2 else (f"burst-{i}.csv", csv) for i in range(BURST)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(lambda f: upload(platform, *f), files))
    assert len(set(ids)) == BURST

    def runs_of(upload_id: str) -> list[dg.DagsterRun]:
        return runs_of_upload(instance, upload_id)

    deadline = time.monotonic() + 180
    while sum(1 for i in ids if runs_of(i)) < 3:
        assert time.monotonic() < deadline, "the daemon requested no runs"
        platform.check_alive()
        time.sleep(0.2)
    old_group = kill_daemon(platform)
    try:
        time.sleep(1)
        platform.start_daemon()
        records = [wait_for_upload(platform.api_url, i, timeout_s=600, platform=platform) for i in ids]
        assert [r["state"] for r in records] == ["succeeded"] * BURST, [r for r in records if r["state"] != "succeeded"]
        for upload_id, record in zip(ids, records):
            # A backlog run ends after its last upload: an upload is succeeded before its run is.
            finished_run(instance, record["run_id"], timeout_s=180)
            runs = runs_of(upload_id)
            # Exactly one run from the sensor per upload. (A run retry, which a run whose launch was
            # cut by the kill may get, is not a second request: it has a parent run.)
            requested = [r for r in runs if "dagster/parent_run_id" not in r.tags]
            assert len(requested) == 1, (upload_id, [(r.run_id, r.status, r.tags) for r in runs])
            scored = [r for r in runs if r.status == dg.DagsterRunStatus.SUCCESS]
            assert [r.run_id for r in scored] == [record["run_id"]]  # scored exactly once
            assert record["rows_total"] == (1 if record["format"] == "xlsx" else 3)
        assert all(download(platform, i) for i in ids)
        # Uploads that waited together shared backlog runs (one process start for several uploads).
        assert len({r["run_id"] for r in records}) < BURST
        # Every message is acknowledged in the end: the queue drains once the runs exist.
        deadline = time.monotonic() + 60
        while queue_depth(platform):
            assert time.monotonic() < deadline, f"{queue_depth(platform)} messages never acknowledged"
            time.sleep(0.5)
    finally:
        try:
            os.killpg(old_group, signal.SIGKILL)  # what is left of the killed daemon's group
        except ProcessLookupError:
            pass
