"""The Dagster UI as a person sees it: each group's model chain with its checks, and the trained
model's metrics and predicted-vs-actual plot, and a scored upload's partition with its checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg
import httpx
import pytest

from aimq_pipelines.models.assets import group_name
from aimq_pipelines.monitoring.scored_uploads import SCORED_UPLOADS
from aimq_serving import schema
from aimq_serving.model_store import ModelStore
from tests.helpers.browser import screenshot
from tests.helpers.faults import wait_until
from tests.helpers.paths import SAMPLES
from tests.helpers.platform import Platform, wait_for_upload

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHAIN = ("training_data", "feature_spec", "trained_model", "onnx_model", "served_model")


@pytest.mark.slow
def test_asset_graph_shows_each_groups_chain(trained_store: ModelStore, dagster_ui: str, page: Page) -> None:
    page.goto(f"{dagster_ui}/asset-groups")
    for group in schema.MODEL_GROUPS:
        page.get_by_text(group_name(group), exact=True).first.wait_for()
    page.goto(f"{dagster_ui}/locations/aimq/asset-groups/{group_name('A')}")
    for asset in CHAIN:
        page.get_by_text(asset, exact=True).first.wait_for()
    screenshot(page, "dagster-asset-graph")


@pytest.mark.slow
def test_trained_model_shows_its_metrics_plot_and_check(trained_store: ModelStore, dagster_ui: str, page: Page) -> None:
    info = trained_store.info("B", trained_store.current_version("B"))
    page.goto(f"{dagster_ui}/assets/B/trained_model")
    for key in ("r2", "mae", "mape", "predicted_vs_actual"):
        page.get_by_text(key, exact=True).first.wait_for()
    page.get_by_text("[Show Markdown]").first.click()
    plot = page.get_by_role("dialog").locator("img")
    plot.wait_for()
    assert (plot.get_attribute("src") or "").startswith("data:image/png;base64,")
    assert plot.evaluate("img => img.naturalWidth") > 300
    screenshot(page, "dagster-trained-model-plot")

    page.goto(f"{dagster_ui}/assets/B/trained_model?view=checks")
    # Two checks now (champion_challenger first, alphabetically): open holdout_quality's.
    page.get_by_text("holdout_quality", exact=True).first.click()
    page.get_by_text("Passed", exact=True).first.wait_for()
    # the check's recorded r2 is the model store's: the UI shows the float's repr (cut to its first
    # digits, never rounded: a rounded 0.977415 is not in the shown 0.977414771988567)
    page.get_by_text(repr(info.metrics["r2"])[:8], exact=False).first.wait_for()
    screenshot(page, "dagster-trained-model-check")


@pytest.mark.slow
def test_a_scored_upload_is_its_own_partition_with_its_drift_check(
    platform: Platform, dagster_ui: str, page: Page, instance: dg.DagsterInstance
) -> None:
    content = (SAMPLES / "100_rows.xlsx").read_bytes()
    response = httpx.post(f"{platform.api_url}/upload", files={"file": ("100_rows.xlsx", content)}, timeout=30)
    assert response.status_code == 202, response.text
    upload_id = response.json()["upload_id"]
    assert wait_for_upload(platform.api_url, upload_id, platform=platform)["state"] == "succeeded"
    # The run reports the partition and its checks once the status is recorded, a few writes later.
    wait_until(lambda: _checked(instance, upload_id), "its scored_uploads checks", timeout_s=60, interval_s=0.5)

    page.goto(f"{dagster_ui}/assets/scored_uploads?view=partitions&partition={upload_id}")
    for key in ("rows_rejected", "model_versions", "drift_verdict"):
        page.get_by_text(key, exact=True).first.wait_for()
    # The partition list shows the id cut in the middle; the full id is the metadata's upload_id.
    page.get_by_text(upload_id, exact=True).locator("visible=true").first.wait_for()
    screenshot(page, "dagster-scored-upload")
    page.goto(f"{dagster_ui}/assets/scored_uploads?view=checks")
    for check in ("input_drift", "input_schema"):
        page.get_by_text(check, exact=True).first.wait_for()
    screenshot(page, "dagster-scored-upload-checks")


def _checked(instance: dg.DagsterInstance, upload_id: str) -> bool:
    """Both checks of the upload's scored_uploads partition are stored (the run reports them last)."""
    return all(
        any(
            r.partition == upload_id
            for r in instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(SCORED_UPLOADS, check), limit=20
            )
        )
        for check in ("input_drift", "input_schema")
    )
