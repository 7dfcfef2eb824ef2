"""Fixtures of the API tests: the pipeline's models copied to a prefix of their own, apps over it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient

from aimq_serving.api.app import create_app
from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings
from tests.helpers.paths import SAMPLES
from tests.helpers.redis_keys import clear_prefix, copy_models


@pytest.fixture(scope="session")
def api_settings(
    trained_store: ModelStore, settings: AimqSettings, redis_client: redis.Redis
) -> Iterator[AimqSettings]:
    """Settings over a copy of the pipeline's models: API tests may promote or rate-limit there
    without disturbing the other tests' store."""
    prefix = f"{settings.redis_prefix}-api"
    copy_models(redis_client, settings.redis_prefix, prefix)
    yield settings.model_copy(update={"redis_prefix": prefix, "rate_limit_requests": 1_000_000})
    clear_prefix(redis_client, prefix)


@pytest.fixture(scope="session")
def api_store(api_settings: AimqSettings) -> ModelStore:
    return ModelStore.from_settings(api_settings)


@pytest.fixture(scope="module")
def client(api_settings: AimqSettings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings)) as test_client:
        yield test_client


@pytest.fixture
def make_client(redis_client: redis.Redis) -> Iterator[Callable[..., TestClient]]:
    """An app with its own settings (and a fresh prefix to clean up when ``prefix`` is new)."""
    opened: list[TestClient] = []
    prefixes: list[str] = []

    def make(settings: AimqSettings, *, owns_prefix: bool = False) -> TestClient:
        if owns_prefix:
            prefixes.append(settings.redis_prefix)
        test_client = TestClient(create_app(settings))
        test_client.__enter__()
        opened.append(test_client)
        return test_client

    yield make
    for test_client in opened:
        test_client.__exit__(None, None, None)
    for prefix in prefixes:
        clear_prefix(redis_client, prefix)


@pytest.fixture(scope="session")
def sample_frame() -> pd.DataFrame:
    return pd.read_excel(SAMPLES / "100_rows.xlsx", keep_default_na=False)


@pytest.fixture(scope="session")
def sample_records(sample_frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The 100 sample rows as JSON-ready records (plain ints and strings)."""
    return json.loads(sample_frame.to_json(orient="records"))
