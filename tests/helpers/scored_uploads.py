"""A fixture plugin: a file uploaded through the API (real RabbitMQ and Redis), scored by the
``score_upload`` job in process (real Dagster instance), its status and downloads returned; and
LibreOffice, the spreadsheet program the results are opened in."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
from fastapi.testclient import TestClient

from aimq_pipelines.models.resources import ModelStoreResource
from aimq_pipelines.uploads.jobs import run_config, run_tags, score_upload_job
from aimq_pipelines.uploads.resources import UploadsResource
from aimq_serving.api.app import create_app
from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings
from tests.helpers.topology import queued

SOFFICE = shutil.which("soffice")
needs_soffice = pytest.mark.skipif(
    SOFFICE is None, reason="LibreOffice is not installed (apt-get install libreoffice-calc-nogui)"
)


@pytest.fixture
def upload_client(uploads_settings: AimqSettings, trained_store: ModelStore) -> Iterator[TestClient]:
    with TestClient(create_app(uploads_settings.model_copy(update={"rate_limit_enabled": False}))) as c:
        yield c


@pytest.fixture
def scored_upload(
    upload_client: TestClient, uploads_settings: AimqSettings, instance: dg.DagsterInstance
) -> Callable[[Path], dict]:
    """Upload a file, run its scoring job, return the status with the downloads' bytes (``result``,
    ``rejected``) once it succeeded."""
    resources = {
        "uploads": UploadsResource(upload_dir=str(uploads_settings.resolved_upload_dir)),
        "model_store": ModelStoreResource(),
    }

    def run(path: Path) -> dict:
        response = upload_client.post(
            "/upload", files={"file": (path.name, path.read_bytes(), "application/octet-stream")}
        )
        assert response.status_code == 202, response.text
        [message] = queued(uploads_settings)
        score_upload_job.execute_in_process(
            run_config=run_config(message),
            tags=run_tags(message),
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )
        status = upload_client.get(f"/uploads/{message.upload_id}").json()
        if status["state"] == "succeeded":
            result = upload_client.get(f"/uploads/{message.upload_id}/result")
            assert result.status_code == 200
            status["result"] = result.content
            status["rejected"] = upload_client.get(f"/uploads/{message.upload_id}/rejected").content
        return status

    return run


def result_file(status: dict, directory: Path, suffix: str = ".xlsx") -> Path:
    assert status["state"] == "succeeded", status.get("error")
    path = directory / f"result{suffix}"
    path.write_bytes(status["result"])
    return path


def soffice_convert(path: Path, out_dir: Path, to: str = "xlsx") -> Path:
    """The file opened by LibreOffice (its own reader, its CSV import defaults) and saved as ``to``."""
    assert SOFFICE is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            SOFFICE,
            "--headless",
            f"-env:UserInstallation=file://{out_dir}/profile",
            "--convert-to",
            to,
            "--outdir",
            str(out_dir),
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    return out_dir / f"{path.stem}.{to}"
