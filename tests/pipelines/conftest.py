"""Fixtures of the scoring jobs' tests (tests/pipelines/uploads/test_jobs.py and the monitoring tests
that run the same jobs): their resources, the upload folder and the status store."""

from __future__ import annotations

import dagster as dg
import pytest

from aimq_pipelines.models.resources import ModelStoreResource
from aimq_pipelines.uploads.resources import UploadsResource
from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings
from aimq_serving.uploads.status import UploadStatusStore
from aimq_serving.uploads.storage import UploadStorage


@pytest.fixture
def resources(uploads_settings: AimqSettings, trained_store: ModelStore) -> dict[str, dg.ConfigurableResource]:
    return {
        "uploads": UploadsResource(upload_dir=str(uploads_settings.resolved_upload_dir)),
        "model_store": ModelStoreResource(),
    }


@pytest.fixture
def storage(uploads_settings: AimqSettings) -> UploadStorage:
    return UploadStorage(uploads_settings.resolved_upload_dir)


@pytest.fixture
def status(settings: AimqSettings) -> UploadStatusStore:
    return UploadStatusStore.from_settings(settings)
