"""The upload page shows an upload's drift: the verdict, and a chart per drifted feature (upload
against training data), in Chromium against the real API; the report is the real monitor's, judged
against the session model's profile and recorded by the real status store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pytest
import redis

from aimq_pipelines.models.synthetic import generate_listings
from aimq_pipelines.monitoring.monitor import Compared, DriftMonitor
from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings
from aimq_serving.uploads.messages import UploadMessage
from aimq_serving.uploads.status import UploadStatusStore
from aimq_serving.uploads.storage import new_upload_id
from tests.helpers.api_server import server_env, uvicorn_server
from tests.helpers.browser import screenshot
from tests.helpers.redis_keys import clear_prefix, copy_models

if TYPE_CHECKING:
    from playwright.sync_api import Page


@pytest.fixture(scope="module")
def drift_api(
    trained_store: ModelStore, settings: AimqSettings, redis_client: redis.Redis
) -> Iterator[tuple[str, AimqSettings]]:
    prefix = f"{settings.redis_prefix}-drift-page"
    copy_models(redis_client, settings.redis_prefix, prefix)
    own = settings.model_copy(update={"redis_prefix": prefix})
    try:
        with uvicorn_server(server_env(own), workers=1) as url:
            yield url, own
    finally:
        clear_prefix(redis_client, prefix)


def record_upload(settings: AimqSettings, store: ModelStore, name: str, frame) -> str:  # noqa: ANN001
    """A scored upload of ``frame`` (group A rows) with the drift the scoring run would record."""
    stored = store.get("A")
    monitor = DriftMonitor({"A": Compared(stored.info.version, stored.spec.columns, stored.profile)})
    matrix, valid, _ = stored.spec.encode_frame(frame)
    monitor.add("A", matrix, frame.iloc[np.flatnonzero(~valid)])
    upload_id = new_upload_id()
    message = UploadMessage(
        upload_id=upload_id,
        format="xlsx",
        sha256="0" * 64,
        size=1000,
        original_name=name,
        created_at=datetime.now(UTC),
    )
    status = UploadStatusStore.from_settings(settings)
    status.register(message)
    status.start(message, "run-drift-page")
    status.succeed(
        upload_id,
        rows_total=len(frame),
        rows_rejected=0,  # no rejected.csv is stored here: the page would look for it
        model_versions={"A": stored.info.version},
        stats={},
        drift=monitor.report().to_json(),
    )
    return upload_id


def test_a_drifted_upload_shows_its_verdict_and_a_chart_per_drifted_feature(
    drift_api: tuple[str, AimqSettings], trained_store: ModelStore, page: Page
) -> None:
    url, settings = drift_api
    frame = generate_listings("A", 300, seed=31)
    frame["fuel_type"] = frame["fuel_type"].astype(object)
    frame.loc[frame.index[::5], "fuel_type"] = "Hydrogen"  # 20 % of rows: a fuel the model never saw
    upload_id = record_upload(settings, trained_store, "hydrogen.xlsx", frame)

    page.goto(f"{url}/#upload={upload_id}")
    page.locator("#job-state[data-state=succeeded]").wait_for()
    verdict = page.locator("#drift-verdict")
    assert verdict.get_attribute("data-verdict") == "drift"
    assert verdict.inner_text().startswith("Drift in group A (v")
    assert "fuel_type" in verdict.inner_text()
    assert page.locator("#job-name").inner_text() == "hydrogen.xlsx"
    figure = page.locator("figure.drift-figure[data-feature=fuel_type]")
    assert figure.count() == 1
    assert "unseen 20.0 %" in figure.locator("figcaption").inner_text()
    chart = figure.locator("svg[role=img]")
    assert "upload against training data" in chart.get_attribute("aria-label")
    labels = chart.locator("text").all_text_contents()
    assert "unseen" in labels and "Petrol" in labels  # the new value beside the training categories
    assert chart.locator("rect.bar-upload").count() >= 5
    screenshot(page, "upload-page-drift")

    # a clean upload of the same group: no drift, no chart
    clean = record_upload(settings, trained_store, "clean.xlsx", generate_listings("A", 300, seed=32))
    page.goto(f"{url}/#upload={clean}")
    page.locator("#drift-verdict[data-verdict=no_drift]").wait_for()
    assert page.locator("#drift-verdict").inner_text() == "No drift: 300 rows judged look like the training data."
    assert page.locator("figure.drift-figure").count() == 0

    # too few rows: not judged, and why
    few = record_upload(settings, trained_store, "few.xlsx", generate_listings("A", 5, seed=33))
    page.goto(f"{url}/#upload={few}")
    page.locator("#drift-verdict[data-verdict=not_judged]").wait_for()
    assert "too few rows to judge" in page.locator("#drift-verdict").inner_text()
    assert page.js_errors == []  # type: ignore[attr-defined]
