"""Fixtures of the upload tests: the API's own predictions to compare the batch numbers with."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aimq_serving import schema
from aimq_serving.api.app import create_app
from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings

_NUMBERS = {"model", *schema.NUMERIC_BY_NAME}


def api_record(row: dict[str, Any]) -> dict[str, Any]:
    """A spreadsheet row as the API takes it: numbers as ints (xlsx stores them as floats, and a
    column with one text cell reads as text)."""
    out = {}
    for key, value in row.items():
        if key in _NUMBERS and isinstance(value, str):
            value = float(value)
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        out[key] = value
    return out


@pytest.fixture(scope="module")
def api_client(trained_store: ModelStore, settings: AimqSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update={"rate_limit_enabled": False}))) as client:
        yield client


@pytest.fixture(scope="module")
def api_prices(api_client: TestClient) -> Callable[[list[dict[str, Any]]], list[float]]:
    """``/predict/onnx`` for each record, in batches of the API's maximum size."""

    def prices(records: list[dict[str, Any]]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(records), 500):
            chunk = [api_record(r) for r in records[start : start + 500]]
            response = api_client.post("/predict/onnx", json=chunk)
            assert response.status_code == 200, response.text
            out.extend(item["predicted_price"] for item in response.json())
        return out

    return prices
