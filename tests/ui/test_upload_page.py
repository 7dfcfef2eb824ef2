"""The upload page (GET /) in headless Chromium against the real API, daemon and Dagster UI."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import httpx
import pandas as pd
import pytest

from aimq_serving.api.payloads import SAMPLE_ROWS
from tests.helpers.browser import new_page, screenshot
from tests.helpers.paths import SAMPLES
from tests.helpers.platform import Platform

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

# A scoring run waits for a sensor tick and a run process; on 2 busy cores that can take minutes.
RUN_TIMEOUT_MS = 240_000
FINISHED = "#job-state[data-state=succeeded], #job-state[data-state=failed]"


def open_page(page: Page, api_url: str) -> None:
    page.goto(api_url + "/")
    page.locator("body[data-ready=true]").wait_for()


@pytest.fixture(scope="module")
def scored_page(platform: Platform, browser: Browser) -> Iterator[Page]:
    """The page after uploading 100_rows.xlsx through it and watching it succeed."""
    tab = new_page(browser)
    open_page(tab, platform.api_url)
    tab.get_by_label("Choose a file or drop it here").set_input_files(SAMPLES / "100_rows.xlsx")
    tab.locator(FINISHED).wait_for(timeout=RUN_TIMEOUT_MS)
    yield tab
    tab.context.close()


@pytest.mark.slow
def test_upload_the_sample_file_watch_it_and_download_the_result(scored_page: Page, tmp_path: Path) -> None:
    page = scored_page
    assert page.locator("#job-state").inner_text() == "succeeded", page.locator("#upload-error").inner_text()
    assert page.locator("#job-name").inner_text() == "100_rows.xlsx"
    assert page.locator("#job-count").inner_text() == "100 / 100 rows"
    details = dict(
        zip(page.locator("#job-details dt").all_inner_texts(), page.locator("#job-details dd").all_inner_texts())
    )
    assert details["Rows scored"] == "100" and details["Rows rejected"] == "0"
    assert re.fullmatch(r"A v\d+, B v\d+, C v\d+", details["Model versions"])
    assert page.locator("#rejected").is_hidden()
    # the sample file is drawn like the training data: judged, no drift, no chart
    assert page.locator("#drift-verdict").get_attribute("data-verdict") == "no_drift"
    assert page.locator("#drift-verdict").inner_text() == "No drift: 100 rows judged look like the training data."
    assert page.locator("figure.drift-figure").count() == 0
    screenshot(page, "upload-page-succeeded")

    with page.expect_download() as info:
        page.get_by_role("link", name="Download result").click()
    download = info.value
    assert download.suggested_filename == "100_rows_scored.xlsx"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    scored = pd.read_excel(saved, sheet_name="predictions", keep_default_na=False)
    assert len(scored) == 100 and scored["predicted_price"].notna().all()
    versions = ", ".join(f"{g} v{int(v)}" for g, v in scored.groupby("model_group")["model_version"].first().items())
    assert details["Model versions"] == versions

    # the upload is listed under recent uploads with its links
    recent = page.locator("#recent-rows tr").filter(has_text="100_rows.xlsx").first
    assert "succeeded" in recent.inner_text()
    assert page.js_errors == []  # type: ignore[attr-defined]


@pytest.mark.slow
def test_the_run_link_opens_the_scoring_run_with_its_upload_tags(
    dagster_ui: str, scored_page: Page, browser: Browser
) -> None:
    upload_id = scored_page.locator("#job-details dd code").inner_text()
    link = scored_page.get_by_role("link", name=re.compile(r"^[0-9a-f]{8}$"))
    run_url = link.get_attribute("href")
    assert run_url and run_url.startswith(f"{dagster_ui}/runs/")

    page = new_page(browser)
    try:
        page.goto(run_url)
        page.get_by_text("score_upload", exact=False).first.wait_for()
        page.get_by_text("Success", exact=True).first.wait_for()
        page.get_by_role("button", name="View tags and config").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text(f"aimq/upload_id: {upload_id}").wait_for()
        dialog.get_by_text("aimq/original_name: 100_rows.xlsx").wait_for()
        screenshot(page, "dagster-run-page")

        # a person holding only the upload id finds its run by the tag
        run_id = run_url.rsplit("/", 1)[1]
        page.goto(f"{dagster_ui}/runs?" + urlencode({"q[0]": f"tag:aimq/upload_id={upload_id}"}))
        page.get_by_text(run_id[:8], exact=True).wait_for()
        assert page.get_by_text("score_upload", exact=True).count() == 1  # one row: this run only
        screenshot(page, "dagster-runs-of-an-upload")
    finally:
        page.context.close()


@pytest.mark.slow
def test_rejected_rows_are_shown_with_their_reasons(platform: Platform, page: Page, tmp_path: Path) -> None:
    frame = pd.read_excel(SAMPLES / "100_rows.xlsx", keep_default_na=False)
    frame.loc[4, "fuel_type"] = "Steam"
    frame.loc[7, "kilometers"] = -3
    source = tmp_path / "with-bad-rows.csv"
    frame.to_csv(source, index=False)
    open_page(page, platform.api_url)
    page.get_by_label("Choose a file or drop it here").set_input_files(source)
    page.locator(FINISHED).wait_for(timeout=RUN_TIMEOUT_MS)
    assert page.locator("#job-state").inner_text() == "succeeded"
    rows = page.locator("#rejected-rows tr")
    assert rows.count() == 2
    assert rows.nth(0).locator("td").first.inner_text() == "6"
    why = rows.nth(0).locator("td").nth(1).inner_text()
    assert why.startswith("fuel_type: unknown value 'Steam' (allowed: Petrol, Diesel")
    assert rows.nth(1).locator("td").first.inner_text() == "9"
    assert rows.nth(1).locator("td").nth(1).inner_text().startswith("kilometers: ")
    assert page.get_by_role("link", name="Download rejected rows (CSV)").is_visible()
    screenshot(page, "upload-page-rejected-rows")


def test_a_refused_file_shows_the_api_error(platform: Platform, page: Page) -> None:
    open_page(page, platform.api_url)
    png = b"\x89PNG\r\n\x1a\n" + bytes(64)
    page.get_by_label("Choose a file or drop it here").set_input_files(
        {"name": "photo.csv", "mimeType": "text/csv", "buffer": png}
    )
    error = page.locator("#upload-error")
    error.get_by_text("unsupported file type", exact=False).wait_for()
    assert "(HTTP 415)" in error.inner_text()
    assert page.locator("#job-state").inner_text() == "refused"
    assert page.locator("#job-details dt").count() == 0  # no upload exists to follow
    screenshot(page, "upload-page-refused")


def test_predict_form_prices_a_record_and_shows_field_errors(platform: Platform, page: Page) -> None:
    open_page(page, platform.api_url)
    record = SAMPLE_ROWS[0]
    page.get_by_label("model_group", exact=True).select_option(label="C")
    page.get_by_label("kilometers", exact=True).fill("25000")
    expected = httpx.post(
        f"{platform.api_url}/predict/onnx", json={**record, "model_group": "C", "kilometers": 25000}
    ).json()
    page.get_by_role("button", name="Predict").click()
    page.locator("#predicted-price").wait_for()
    shown = page.locator("#predicted-price").inner_text()
    assert re.fullmatch(r"\d{1,3}(,\d{3})*\.\d\d", shown)
    # to the cent (JavaScript rounds a half cent up, Python to even)
    assert float(shown.replace(",", "")) == pytest.approx(expected["predicted_price"], abs=0.0051)
    assert f"group C, model version {expected['model_version']}, onnx" in page.locator("#predict-result").inner_text()
    low, high = page.locator("#predicted-range").inner_text().removeprefix("90% range: ").split(" – ")
    assert float(low.replace(",", "")) == pytest.approx(expected["price_low"], abs=0.0051)
    assert float(high.replace(",", "")) == pytest.approx(expected["price_high"], abs=0.0051)
    assert page.locator("#predicted-out-of-range").count() == 0

    # Beyond the training data: the page says which field, as the API does.
    page.get_by_label("kilometers", exact=True).fill("1999999")
    far = httpx.post(f"{platform.api_url}/predict/onnx", json={**record, "model_group": "C", "kilometers": 1999999})
    assert far.json()["out_of_range"] == ["kilometers"]
    page.get_by_role("button", name="Predict").click()
    page.locator("#predicted-out-of-range").wait_for()
    assert "trained on: kilometers. The price is a guess there." in page.locator("#predicted-out-of-range").inner_text()
    screenshot(page, "upload-page-predict-out-of-range")

    page.get_by_label("kilometers", exact=True).fill("-5")
    page.get_by_role("button", name="Predict").click()
    error = page.locator("#predict-error")
    error.get_by_text("kilometers:", exact=False).wait_for()
    assert "(HTTP 422)" in error.inner_text()
    assert page.get_by_label("kilometers", exact=True).get_attribute("aria-invalid") == "true"
    assert "-5 must be a whole number in [0, 2000000]" in page.locator("#f-kilometers-error").inner_text()
    assert page.locator("#predict-result").inner_text() == ""
    screenshot(page, "upload-page-predict-error")
    assert page.js_errors == []  # type: ignore[attr-defined]
