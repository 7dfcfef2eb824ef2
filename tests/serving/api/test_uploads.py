"""POST /upload and the status endpoints, with the real Redis and RabbitMQ (no Dagster here)."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from aimq_serving.api.app import create_app
from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings
from aimq_serving.uploads.messages import UploadMessage
from aimq_serving.uploads.storage import UploadStorage
from tests.helpers import compound_files
from tests.helpers.paths import SAMPLES
from tests.helpers.topology import queued, queued_bodies

SAMPLE = (SAMPLES / "100_rows.xlsx").read_bytes()


@pytest.fixture
def make_client(trained_store: ModelStore) -> Iterator[Callable[[AimqSettings], TestClient]]:
    opened: list[TestClient] = []

    def make(settings: AimqSettings) -> TestClient:
        client = TestClient(create_app(settings.model_copy(update={"rate_limit_enabled": False})))
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def stored_files(settings: AimqSettings) -> list[Path]:
    root = settings.resolved_upload_dir
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_upload_is_stored_queued_and_registered(uploads_settings: AimqSettings, make_client) -> None:
    client = make_client(uploads_settings)
    response = client.post("/upload", files={"file": ("C:\\Users\\me\\listings 2024.xlsx", SAMPLE, "text/plain")})
    assert response.status_code == 202, response.text
    body = response.json()
    upload_id = body["upload_id"]
    assert body == {
        "upload_id": upload_id,
        "state": "queued",
        "status_url": f"/uploads/{upload_id}",
        "result_url": f"/uploads/{upload_id}/result",
    }
    assert response.headers["location"] == f"/uploads/{upload_id}"

    [body] = queued_bodies(uploads_settings)
    # The wire format (docs/batch.md): no stored_path, the path follows from the id and format.
    assert set(json.loads(body)) == {"version", "upload_id", "format", "sha256", "size", "original_name", "created_at"}
    message = UploadMessage.parse(body)
    assert message.upload_id == upload_id and message.format == "xlsx"
    assert message.original_name == "listings 2024.xlsx"  # metadata only, directories dropped
    assert message.size == len(SAMPLE) and message.sha256 == hashlib.sha256(SAMPLE).hexdigest()
    stored = UploadStorage(uploads_settings.resolved_upload_dir).input_path(upload_id, "xlsx")
    assert stored_files(uploads_settings) == [stored] and stored.read_bytes() == SAMPLE

    status = client.get(f"/uploads/{upload_id}").json()
    assert status["state"] == "queued" and status["size"] == len(SAMPLE) and status["format"] == "xlsx"
    assert status["result_url"] is None and status["run_url"] is None
    result = client.get(f"/uploads/{upload_id}/result")
    assert result.status_code == 409 and "queued" in result.json()["detail"]
    listed = client.get("/uploads", params={"limit": 5, "state": "queued"}).json()["uploads"]
    assert upload_id in [u["upload_id"] for u in listed]


def test_csv_is_recognised_by_content(uploads_settings: AimqSettings, make_client) -> None:
    client = make_client(uploads_settings)
    text = "model_group;model\nA;180\n".encode("utf-8-sig")
    response = client.post("/upload", files={"file": ("data.xlsx", text, "application/vnd.ms-excel")})
    assert response.status_code == 202, response.text
    [message] = queued(uploads_settings)
    assert message.format == "csv"
    assert stored_files(uploads_settings) == [
        UploadStorage(uploads_settings.resolved_upload_dir).input_path(message.upload_id, "csv")
    ]


def _docx() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("word/document.xml", "<w/>")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"%PDF-1.7\n...", "PDF document"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "legacy Excel .xls"),
        (_docx(), "Word document"),
        ("prix;modèle\n1;2\n".encode("latin-1"), "not UTF-8"),
        ("a,b\n".encode("utf-16"), "UTF-16"),
    ],
    ids=["pdf", "xls", "docx", "latin-1", "utf-16"],
)
def test_unsupported_types_are_415(uploads_settings: AimqSettings, make_client, content: bytes, message: str) -> None:
    client = make_client(uploads_settings)
    response = client.post("/upload", files={"file": ("listings.xlsx", content)})
    assert response.status_code == 415, response.text
    assert message in response.json()["detail"]
    assert stored_files(uploads_settings) == [] and queued(uploads_settings) == []


@pytest.mark.timeout(60)
def test_a_compound_file_built_to_loop_a_reader_is_415_at_once(uploads_settings: AimqSettings, make_client) -> None:
    # Its DIFAT names itself as the next sector of a FAT claimed 2**32 - 1 sectors long; olefile
    # alone goes round 33 million times (tests/tabular/test_sniff_compound_files.py).
    client = make_client(uploads_settings)
    response = client.post("/upload", files={"file": ("listings.xls", compound_files.difat_loop())})
    assert response.status_code == 415, response.text
    assert "legacy Excel .xls" in response.json()["detail"]
    assert stored_files(uploads_settings) == [] and queued(uploads_settings) == []


def test_request_problems_are_415_or_422(uploads_settings: AimqSettings, make_client) -> None:
    client = make_client(uploads_settings)
    cases = [
        (client.post("/upload", json={"file": "x"}), 415, "multipart/form-data"),
        (client.post("/upload", data={"note": "no file"}, files={"other": ("a.csv", b"a,b\n")}), 422, "no file"),
        (client.post("/upload", files={"file": ("empty.csv", b"")}), 422, "empty"),
        (
            client.post("/upload", files=[("file", ("a.csv", b"a,b\n")), ("file", ("b.csv", b"a,b\n"))]),
            422,
            "exactly one",
        ),
        (client.post("/upload", files={"file": ("cut.xlsx", SAMPLE[:3000])}), 422, "zip structure is damaged"),
    ]
    for response, status, text in cases:
        assert response.status_code == status, response.text
        assert text in response.json()["detail"]
    assert stored_files(uploads_settings) == [] and queued(uploads_settings) == []
    assert client.get("/uploads/" + "0" * 32).status_code == 404
    assert client.get("/uploads/not-an-id").status_code == 422


def test_too_large_is_413_and_leaves_nothing(uploads_settings: AimqSettings, make_client) -> None:
    client = make_client(uploads_settings.model_copy(update={"max_upload_bytes": 4096}))
    # Found while streaming the file.
    response = client.post("/upload", files={"file": ("big.xlsx", SAMPLE)})
    assert response.status_code == 413, response.text
    assert "larger than the limit of 4,096 bytes" in response.json()["detail"]
    # Found from Content-Length, before reading.
    response = client.post("/upload", files={"file": ("huge.xlsx", SAMPLE * 20)})
    assert response.status_code == 413, response.text
    # Chunked, no Content-Length: found by counting the body.
    boundary = "b0undary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="c.xlsx"\r\n\r\n'.encode()

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(20):
            yield SAMPLE
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        "/upload", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status_code == 413, response.text
    assert "AIMQ_MAX_UPLOAD_BYTES" in response.json()["detail"]
    assert stored_files(uploads_settings) == [] and queued(uploads_settings) == []


def test_broker_down_is_503_and_keeps_nothing(uploads_settings: AimqSettings, make_client) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = uploads_settings.model_copy(
        update={"rabbitmq_url": SecretStr(f"amqp://guest:guest@127.0.0.1:{port}/%2F"), "broker_confirm_timeout_s": 1.0}
    )
    client = make_client(down)
    before = {u["upload_id"] for u in client.get("/uploads", params={"limit": 500}).json()["uploads"]}
    response = client.post("/upload", files={"file": ("listings.xlsx", SAMPLE)})
    assert response.status_code == 503, response.text
    assert "not kept" in response.json()["detail"] and response.headers["retry-after"]
    assert stored_files(uploads_settings) == []
    after = {u["upload_id"] for u in client.get("/uploads", params={"limit": 500}).json()["uploads"]}
    assert after == before  # no record of the refused upload


def test_the_status_carries_the_drift_report(uploads_settings: AimqSettings, make_client) -> None:
    from aimq_pipelines.monitoring.drift import DriftReport, FeatureDrift, GroupDrift
    from aimq_serving.uploads.status import UploadStatusStore

    client = make_client(uploads_settings)
    response = client.post("/upload", files={"file": ("listings.xlsx", SAMPLE)})
    upload_id = response.json()["upload_id"]
    age = FeatureDrift("age_in_months", "numeric", "cell_p_value", 1e-9, 0.004, True, 0.5, 0.0, 0.0, 0.1)
    report = DriftReport("drift", None, 40, {"A": GroupDrift("A", "drift", None, 40, 3, 3, (age,))})
    UploadStatusStore.from_settings(uploads_settings).succeed(
        upload_id, rows_total=40, rows_rejected=0, model_versions={"A": 3}, stats={}, drift=report.to_json()
    )
    body = client.get(f"/uploads/{upload_id}").json()
    assert body["drift"] == json.loads(json.dumps(report.to_json()))
    feature = body["drift"]["groups"]["A"]["features"][0]
    assert (feature["name"], feature["value"], feature["threshold"], feature["drifted"]) == (
        "age_in_months",
        1e-9,
        0.004,
        True,
    )
    listed = client.get("/uploads").json()["uploads"]
    assert next(u for u in listed if u["upload_id"] == upload_id)["drift"]["verdict"] == "drift"
