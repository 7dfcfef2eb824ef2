"""The upload page against an API that requires a key: it loads without one, asks for a key when a
call answers 401, keeps it for the tab, and sends it with every call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import redis
from pydantic import SecretStr

from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings
from tests.helpers.api_server import server_env, uvicorn_server
from tests.helpers.browser import screenshot
from tests.helpers.redis_keys import clear_prefix, copy_models

if TYPE_CHECKING:
    from playwright.sync_api import Page

KEY = "page-" + "0123456789abcdef" * 2


@pytest.fixture(scope="module")
def keyed_api(trained_store: ModelStore, settings: AimqSettings, redis_client: redis.Redis) -> Iterator[str]:
    # A prefix of its own (with copies of the models): no uploads from other tests in its list.
    prefix = f"{settings.redis_prefix}-keyed-page"
    copy_models(redis_client, settings.redis_prefix, prefix)
    own = settings.model_copy(update={"api_keys": SecretStr(f"web:{KEY}"), "redis_prefix": prefix})
    try:
        with uvicorn_server(server_env(own), workers=1) as url:
            yield url
    finally:
        clear_prefix(redis_client, prefix)


def test_the_page_asks_for_a_key_keeps_it_and_sends_it(keyed_api: str, page: Page) -> None:
    page.goto(keyed_api + "/")
    page.locator("body[data-ready=true]").wait_for()
    # The page and its form load without a key; its first API call (recent uploads) is refused.
    assert page.locator("#predict-fields select").count() > 0
    key_form = page.locator("#key-form")
    key_form.wait_for(state="visible")
    assert "an API key is required" in page.locator("#key-message").inner_text()
    screenshot(page, "api-key-asked")

    page.get_by_label("API key").fill("not-the-key-0000000000")
    page.get_by_role("button", name="Use key").click()
    page.locator("#key-message", has_text="invalid API key").wait_for()
    assert key_form.is_visible()

    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Use key").click()
    key_form.wait_for(state="hidden")
    page.locator("#recent-rows td", has_text="No uploads yet.").wait_for()
    assert page.locator("#recent-error").is_hidden()

    # Kept for the tab: a reload sends it without asking again, and predictions go through.
    page.reload()
    page.locator("body[data-ready=true]").wait_for()
    page.locator("#recent-rows td", has_text="No uploads yet.").wait_for()
    assert key_form.is_hidden()
    page.get_by_role("button", name="Predict").click()
    page.locator("#predicted-price").wait_for()
    assert page.evaluate("sessionStorage.getItem('aimq.apiKey')") == KEY
    assert not page.js_errors  # type: ignore[attr-defined]
    screenshot(page, "api-key-used")
