"""The page's files: served from the package, from this server only, never by a client-given path."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from aimq_serving import schema
from aimq_serving.api.app import create_app
from aimq_serving.api.routers.ui import STATIC_DIR
from aimq_serving.settings import AimqSettings


@pytest.fixture(scope="module")
def client(settings: AimqSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_page_and_assets_are_served_with_a_strict_policy(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    for name, media in (("app.js", "text/javascript"), ("style.css", "text/css")):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(media)
        assert asset.text == (STATIC_DIR / name).read_text()


def test_nothing_is_loaded_from_elsewhere() -> None:
    for name in ("index.html", "app.js", "style.css"):
        text = (STATIC_DIR / name).read_text()
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), name
        assert not re.search(r"""url\(\s*["']?(https?:)?//""", text), name
        assert "@import" not in text, name


@pytest.mark.parametrize("name", ["index.html", "..%2Fapp.py", "%2e%2e/%2e%2e/settings.py", "missing.js"])
def test_only_the_listed_files_are_served(client: TestClient, name: str) -> None:
    response = client.get(f"/static/{name}")
    assert response.status_code == 404
    assert "detail" in response.json()


def test_form_description_follows_the_schema(client: TestClient) -> None:
    config = client.get("/ui/config").json()
    assert [f["name"] for f in config["fields"]] == list(schema.INPUT_COLUMNS)
    fuel = next(f for f in config["fields"] if f["name"] == "fuel_type")
    assert fuel["values"] == list(schema.CATEGORICAL_BY_NAME["fuel_type"].values)
    km = next(f for f in config["fields"] if f["name"] == "kilometers")
    assert (km["minimum"], km["maximum"]) == (0, 2_000_000)
    assert set(config["example"]) == set(schema.INPUT_COLUMNS)
