"""The browser tests' fixtures: one headless Chromium for the folder, a fresh page per test
(tests/helpers/browser.py says how they are made, and when a missing browser skips or fails)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.helpers.browser import CHROMIUM_ARGS, chromium_path, new_page, unavailable

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


# Package scope: Playwright's sync API keeps an event loop running in the main thread while it is
# open, which would break any later test that calls asyncio.run().
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        unavailable("the browser tests need Debian's chromium (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the browser tests need the playwright package (pip install -e '.[test]')")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    tab = new_page(browser)
    yield tab
    tab.context.close()
