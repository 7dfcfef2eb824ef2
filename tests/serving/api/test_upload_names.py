"""Hostile names: a client's file name never becomes a path or a header, an id never leaves the
upload folder. POST /upload and the downloads through the app, with the real Redis and RabbitMQ."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from aimq_serving.api.app import create_app
from aimq_serving.api.routers.uploads import content_disposition
from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings
from aimq_serving.uploads.messages import UploadMessage
from aimq_serving.uploads.status import UploadStatusStore
from aimq_serving.uploads.storage import UploadStorage
from tests.helpers.corpus import HEADER, csv_bytes, sample_rows
from tests.helpers.topology import queued

CSV = csv_bytes([HEADER, *sample_rows()[:2]])
BOUNDARY = b"names-boundary"


@pytest.fixture
def client(uploads_settings: AimqSettings, trained_store: ModelStore) -> Iterator[TestClient]:
    with TestClient(create_app(uploads_settings.model_copy(update={"rate_limit_enabled": False}))) as test_client:
        yield test_client


def post_raw_name(client: TestClient, raw_name: bytes) -> dict:
    """The part header written byte for byte, as a hostile client would (no client-side escaping)."""
    body = (
        b"--"
        + BOUNDARY
        + b'\r\nContent-Disposition: form-data; name="file"; filename="'
        + raw_name
        + b'"\r\n\r\n'
        + CSV
        + b"\r\n--"
        + BOUNDARY
        + b"--\r\n"
    )
    response = client.post(
        "/upload", content=body, headers={"content-type": f"multipart/form-data; boundary={BOUNDARY.decode()}"}
    )
    assert response.status_code in (202, 422), response.text
    return response.json()


NAMES = {
    b"../../etc/passwd.csv": "passwd.csv",
    b"..\\..\\windows\\win.ini.csv": "win.ini.csv",
    b"/absolute/path/listings.csv": "listings.csv",
    b"..": "upload",
    "r\u00e9sum\u00e9 \u65e5\u672c.csv".encode(): "r\u00e9sum\u00e9 \u65e5\u672c.csv",
    b"nul\x00byte.csv": "nulbyte.csv",
    b"tab\there.csv": "tabhere.csv",
    "bidi\u202egnp.csv".encode(): "bidignp.csv",
}


def test_file_names_are_metadata_only(client: TestClient, uploads_settings: AimqSettings) -> None:
    root = uploads_settings.resolved_upload_dir
    for raw, expected in NAMES.items():
        body = post_raw_name(client, raw)
        upload_id = body["upload_id"]
        assert client.get(f"/uploads/{upload_id}").json()["original_name"] == expected, raw
    messages = queued(uploads_settings)
    assert [m.original_name for m in messages] == list(NAMES.values())
    # Every stored file is <id[:2]>/<id>/input.csv under the upload root, nothing anywhere else.
    stored = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert stored == sorted(f"{m.upload_id[:2]}/{m.upload_id}/input.csv" for m in messages)


def test_a_name_with_a_line_break_cannot_inject_a_header(client: TestClient, uploads_settings: AimqSettings) -> None:
    # A raw CR LF ends the part's header line: whatever the parser makes of the rest, the upload is
    # either refused or stored under a name without control characters.
    body = post_raw_name(client, b"a\r\nSet-Cookie: x=y.csv")
    if "upload_id" in body:
        name = client.get(f"/uploads/{body['upload_id']}").json()["original_name"]
        assert "\r" not in name and "\n" not in name
    # Percent- or otherwise escaped by a well-behaved client: the name is kept, harmlessly.
    response = client.post("/upload", files={"file": ('a"\r\nSet-Cookie: x=y.csv', CSV)})
    assert response.status_code == 202, response.text


def _finish(settings: AimqSettings, upload_id: str) -> None:
    """What a successful run leaves behind: its result files and the succeeded state (the real
    runs are in tests/e2e/test_bad_uploads_e2e.py)."""
    status = UploadStatusStore.from_settings(settings)
    record = status.get(upload_id)
    assert record is not None
    message = UploadMessage.model_validate(
        record.model_dump(include={"upload_id", "format", "sha256", "size", "original_name", "created_at"})
    )
    storage = UploadStorage(settings.resolved_upload_dir)
    storage.result_path(upload_id, "csv").write_bytes(CSV)
    storage.rejected_path(upload_id).write_text("row,errors\n")
    status.start(message, "run-of-test")
    status.succeed(upload_id, rows_total=2, rows_rejected=0, model_versions={}, stats={})


@pytest.mark.parametrize(
    ("name", "disposition"),
    [
        ("listings.csv", 'attachment; filename="listings_scored.csv"'),
        # httpx sends the quote as %22 (HTML's form encoding), which reaches the server as is.
        ('a"b;c.csv', "attachment; filename=\"a_22b_c_scored.csv\"; filename*=UTF-8''a%2522b%3Bc_scored.csv"),
        (
            "r\u00e9sum\u00e9.csv",
            "attachment; filename=\"r_sum__scored.csv\"; filename*=UTF-8''r%C3%A9sum%C3%A9_scored.csv",
        ),
        ("Set-Cookie: x=y.csv", 'attachment; filename="Set-Cookie: x=y_scored.csv"'),
        (".csv", 'attachment; filename="upload_scored.csv"'),
    ],
)
def test_download_names_are_safe_headers(
    client: TestClient, uploads_settings: AimqSettings, name: str, disposition: str
) -> None:
    response = client.post("/upload", files={"file": (name, CSV)})
    assert response.status_code == 202, response.text
    upload_id = response.json()["upload_id"]
    _finish(uploads_settings, upload_id)
    result = client.get(f"/uploads/{upload_id}/result")
    assert result.status_code == 200 and result.content == CSV
    assert result.headers["content-disposition"] == disposition
    assert "set-cookie" not in result.headers
    rejected = client.get(f"/uploads/{upload_id}/rejected")
    assert rejected.headers["content-disposition"] == disposition.replace("_scored", "_rejected")


def test_content_disposition_never_carries_control_characters_or_quotes() -> None:
    for name in ["x\r\nSet-Cookie: a=b.csv", 'q"uote.csv', "back\\slash.csv", "\u65e5\u672c.csv", "nul\x00.csv"]:
        value = content_disposition(name)
        assert "\r" not in value and "\n" not in value and "\x00" not in value
        fallback = value.split('filename="', 1)[1].split('"', 1)[0]
        assert all(" " <= ch <= "~" and ch not in '"\\/' for ch in fallback)


@pytest.mark.parametrize(
    "path",
    [
        "/uploads/..%2F..%2Fetc%2Fpasswd",
        "/uploads/..%2F..%2Fetc%2Fpasswd/result",
        "/uploads/%2e%2e/result",
        "/uploads/" + "0" * 31 + "%2F/result",
        "/uploads/" + "A" * 32 + "/result",
        "/uploads/" + "0" * 32 + "%00/rejected",
    ],
)
def test_upload_ids_with_traversal_are_404_or_422(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code in (404, 422), (path, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert "root:" not in response.text
