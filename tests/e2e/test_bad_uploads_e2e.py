"""A few cases of the bad-input corpus (tests/helpers/corpus.py) through the real path: the API under
uvicorn, RabbitMQ, the sensor and a Dagster run process. The rest of the corpus runs in
tests/serving/api/test_bad_uploads.py against the same code, without the processes."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import httpx
import pytest

from aimq_pipelines.uploads.jobs import runs_of_upload
from tests.helpers.corpus import BY_ID, HEADER, Failed, Refused, csv_bytes, sample_rows
from tests.helpers.platform import Platform, finished_run, wait_for_upload

pytestmark = pytest.mark.slow


def post(platform: Platform, name: str, content: bytes) -> httpx.Response:
    return httpx.post(f"{platform.api_url}/upload", files={"file": (name, content)}, timeout=60)


def test_bombs_and_encryption_are_refused_by_the_api(platform: Platform, tmp_path: Path) -> None:
    for case_id in ("zip-bomb-shared-strings", "encrypted-xlsx"):
        case = BY_ID[case_id]
        assert isinstance(case.outcome, Refused)
        response = post(platform, case.name, case.write(tmp_path).read_bytes())
        assert response.status_code == case.outcome.status, response.text
        assert case.outcome.detail in response.json()["detail"]
    platform.check_alive()


def test_entity_bomb_fails_its_run_once_with_the_reason(
    platform: Platform, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    case = BY_ID["entity-bomb-shared-strings"]
    assert isinstance(case.outcome, Failed)
    response = post(platform, case.name, case.write(tmp_path).read_bytes())
    assert response.status_code == 202, response.text
    upload_id = response.json()["upload_id"]
    record = wait_for_upload(platform.api_url, upload_id, platform=platform)
    assert record["state"] == "failed" and case.outcome.reason in record["error"], record
    result = httpx.get(f"{platform.api_url}/uploads/{upload_id}/result", timeout=10)
    assert result.status_code == 409 and "XML entity bomb" in result.json()["detail"]
    runs = runs_of_upload(instance, upload_id)
    # Bad input is not retried: one run, and it failed.
    assert len(runs) == 1
    assert finished_run(instance, record["run_id"]).status == dg.DagsterRunStatus.FAILURE


def test_hostile_name_downloads_with_a_safe_header(platform: Platform) -> None:
    name = 'r\u00e9sum\u00e9 "final"\r\nSet-Cookie: a=b.csv'
    response = post(platform, name, csv_bytes([HEADER, *sample_rows()[:3]]))
    assert response.status_code == 202, response.text
    upload_id = response.json()["upload_id"]
    record = wait_for_upload(platform.api_url, upload_id, platform=platform)
    assert record["state"] == "succeeded", record
    assert "\r" not in record["original_name"] and "\n" not in record["original_name"]
    result = httpx.get(f"{platform.api_url}/uploads/{upload_id}/result", timeout=30)
    assert result.status_code == 200
    assert "set-cookie" not in result.headers
    disposition = result.headers["content-disposition"]
    assert (
        disposition.startswith('attachment; filename="r_sum_ ') and "filename*=UTF-8''r%C3%A9sum%C3%A9" in disposition
    )
    assert "\r" not in disposition and "\n" not in disposition


def _raw_get(api_url: str, path: str) -> tuple[int, bytes]:
    """A request line sent as is: no client normalises the dots or decodes the escapes."""
    url = urlsplit(api_url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


@pytest.mark.parametrize(
    "path", ["/uploads/../../../etc/passwd", "/uploads/..%2F..%2F..%2Fetc%2Fpasswd/result", "/uploads/../x/result"]
)
def test_traversal_in_ids_never_reads_a_file(platform: Platform, path: str) -> None:
    status, data = _raw_get(platform.api_url, path)
    assert status in (404, 422), data[:500]
    assert b"root:" not in data
