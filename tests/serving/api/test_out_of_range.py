"""Out-of-range flags online (issue 25): ``out_of_range`` names the numeric fields beyond the
training rows' range, on every backend in the process, one record or a batch; the row is still
priced; a version stored before flags answers null with the reason; the reference is signed."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aimq_serving import schema
from aimq_serving.model_store import ModelStore, TamperedModel
from aimq_serving.settings import AimqSettings
from tests.helpers.out_of_range import beyond_training


def test_fields_beyond_the_training_data_are_named_and_the_row_priced(
    client: TestClient, api_store: ModelStore, sample_records: list[dict[str, Any]]
) -> None:
    cases = beyond_training(api_store, sample_records)
    assert any(expected for _, expected in cases) and any(not expected for _, expected in cases)
    records = [r for r, _ in cases]
    for path in ("/predict/onnx", "/predict/pickle"):
        singles = [client.post(path, json=r).json() for r in records]
        batch = client.post(path, json=records).json()
        for (_, expected), one, many in zip(cases, singles, batch):
            assert one["out_of_range"] == many["out_of_range"] == expected
            assert "out_of_range_note" not in one and "out_of_range_note" not in many
            assert math.isfinite(one["predicted_price"]) and one["price_low"] < one["price_high"]


def test_a_version_stored_before_flags_answers_null_with_the_reason(
    api_store: ModelStore,
    api_settings: AimqSettings,
    make_client: Callable[..., TestClient],
    sample_records: list[dict[str, Any]],
) -> None:
    """As every version stored before this part of issue 25: a calibration but no reference."""
    settings = api_settings.model_copy(update={"redis_prefix": f"{api_settings.redis_prefix}-unreferenced"})
    old = ModelStore.from_settings(settings)
    for group in schema.MODEL_GROUPS:
        stored = api_store.get(group)
        version = old.put(
            group,
            stored.onnx,
            stored.load_sklearn(),
            stored.spec,
            {},
            {},
            calibration=stored.calibration,
            use_redisai=False,
        )
        old.promote(group, version)
        assert old.get(group).reference is None
    client = make_client(settings, owns_prefix=True)
    for path in ("/predict/onnx", "/predict/pickle"):
        for body in (client.post(path, json=sample_records[0]).json(), *client.post(path, json=sample_records).json()):
            assert body["out_of_range"] is None
            assert "stored before out-of-range flags" in body["out_of_range_note"]
            assert body["price_low"] < body["predicted_price"] < body["price_high"] and "range_note" not in body


def test_a_reference_removed_or_changed_is_refused(
    api_store: ModelStore, api_settings: AimqSettings, redis_client: Any
) -> None:
    settings = api_settings.model_copy(update={"redis_prefix": f"{api_settings.redis_prefix}-tampered-ref"})
    store = ModelStore.from_settings(settings)
    stored = api_store.get("A")
    try:
        for tamper in ("drop", "edit"):
            version = store.put(
                "A",
                stored.onnx,
                stored.load_sklearn(),
                stored.spec,
                {},
                {},
                calibration=stored.calibration,
                reference=stored.reference,
            )
            store.promote("A", version)
            key = f"{settings.redis_prefix}:models:A:v:{version}"
            if tamper == "drop":
                redis_client.hdel(key, "reference")
            else:  # a wider range would hide the flags
                redis_client.hset(key, "reference", redis_client.hget(key, "reference").replace(b"[", b"[-1", 1))
            with pytest.raises(TamperedModel):
                store.get("A", version)
    finally:
        store.clear()
