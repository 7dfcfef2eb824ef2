"""Price ranges online (issue 25): ``price_low``/``price_high`` at the default or a requested
coverage, on every backend in the process; a 422 naming the allowed levels; a version stored before
calibration still served, with null ranges and the reason."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aimq_serving import schema
from aimq_serving.model_store import ModelStore, TamperedModel
from aimq_serving.settings import AimqSettings


def test_every_price_has_its_range_at_the_default_coverage(
    client: TestClient, api_store: ModelStore, sample_records: list[dict[str, Any]]
) -> None:
    factors = {g: api_store.get(g).calibration.factor(0.9) for g in schema.MODEL_GROUPS}
    for path in ("/predict/onnx", "/predict/pickle"):
        batch = client.post(path, json=sample_records[:20]).json()
        singles = [client.post(path, json=r).json() for r in sample_records[:20]]
        for item in [*batch, *singles]:
            f = factors[item["model_group"]]
            assert item["coverage"] == 0.9 and "range_note" not in item
            assert item["price_low"] < item["predicted_price"] < item["price_high"]
            assert item["price_low"] == pytest.approx(item["predicted_price"] / f, rel=1e-12)
            assert item["price_high"] == pytest.approx(item["predicted_price"] * f, rel=1e-12)
            assert len(item["model_id"]) == 12
        for one, many in zip(singles, batch):  # one record and a batch answer the same range
            assert one["price_low"] == pytest.approx(many["price_low"], rel=1e-5)


def test_a_request_asks_for_another_coverage(client: TestClient, sample_records: list[dict[str, Any]]) -> None:
    record = sample_records[0]
    widths = []
    for level in (0.5, 0.8, 0.9, 0.95, 0.99):
        body = client.post("/predict/onnx", params={"coverage": level}, json=record).json()
        assert body["coverage"] == level
        widths.append(body["price_high"] / body["price_low"])
    assert widths == sorted(widths) and widths[0] < widths[-1]


@pytest.mark.parametrize("level", ["0.3", "0.995", "1", "90", "nan", "inf", "ninety", ""])
def test_a_coverage_outside_the_range_is_a_422_saying_the_range(
    client: TestClient, sample_records: list[dict[str, Any]], level: str
) -> None:
    for path in ("/predict/onnx", "/predict/pickle"):
        response = client.post(path, params={"coverage": level}, json=sample_records[0])
        assert response.status_code == 422, response.text
        [error] = response.json()["errors"]
        assert error["field"] == "coverage" and "from 0.5 to 0.99" in error["message"]


def test_a_version_stored_before_calibration_is_served_without_a_range(
    api_store: ModelStore,
    api_settings: AimqSettings,
    make_client: Callable[..., TestClient],
    sample_records: list[dict[str, Any]],
) -> None:
    """As every version stored before issue 25: no calibration artifact, signed over the others."""
    settings = api_settings.model_copy(update={"redis_prefix": f"{api_settings.redis_prefix}-uncalibrated"})
    old = ModelStore.from_settings(settings)
    for group in schema.MODEL_GROUPS:
        stored = api_store.get(group)
        version = old.put(group, stored.onnx, stored.load_sklearn(), stored.spec, {}, {}, use_redisai=False)
        old.promote(group, version)
        assert old.get(group).calibration is None
    client = make_client(settings, owns_prefix=True)
    for path in ("/predict/onnx", "/predict/pickle"):
        for body in (client.post(path, json=sample_records[0]).json(), *client.post(path, json=sample_records).json()):
            assert body["price_low"] is None and body["price_high"] is None
            assert "stored before ranges were calibrated" in body["range_note"]
            assert math.isfinite(body["predicted_price"])


def test_a_calibration_removed_or_changed_is_refused(
    api_store: ModelStore, api_settings: AimqSettings, redis_client: Any
) -> None:
    """The calibration is signed with the version: neither dropped nor edited unnoticed."""
    settings = api_settings.model_copy(update={"redis_prefix": f"{api_settings.redis_prefix}-tampered"})
    store = ModelStore.from_settings(settings)
    stored = api_store.get("A")
    try:
        for tamper in ("drop", "edit"):
            version = store.put(
                "A", stored.onnx, stored.load_sklearn(), stored.spec, {}, {}, calibration=stored.calibration
            )
            store.promote("A", version)
            key = f"{settings.redis_prefix}:models:A:v:{version}"
            if tamper == "drop":
                redis_client.hdel(key, "calibration")
            else:
                redis_client.hset(key, "calibration", redis_client.hget(key, "calibration").replace(b"0.", b"0.0", 1))
            with pytest.raises(TamperedModel):
                store.get("A", version)
    finally:
        store.clear()
