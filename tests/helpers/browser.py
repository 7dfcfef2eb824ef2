"""Headless Chromium (Debian's package) for the browser tests: where it is, how it is started, a page
with its JavaScript errors collected, and screenshots under test-output/ui.

Without chromium the browser tests skip, saying why, except in CI (CI=true), where they fail:
CI installs chromium, so its absence there is a broken setup, not a reason to test less.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from tests.helpers.paths import REPO

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

SCREENSHOTS = REPO / "test-output" / "ui"
# No GPU, no sandbox (root in CI), and nothing that reaches out to the internet.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Generous: on 2 shared cores the Dagster UI's first render and a run's start take a while.
TIMEOUT_MS = 60_000


def chromium_path() -> str | None:
    for candidate in (os.environ.get("AIMQ_TEST_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def unavailable(reason: str) -> NoReturn:
    """Skip the test for want of ``reason``; fail it in CI."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must provide it (apt-get install -y chromium, pip install -e '.[test]')")
    pytest.skip(reason)


def new_page(browser: Browser, **kwargs: Any) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True, **kwargs)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors  # type: ignore[attr-defined]
    return page


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
